"""The classes of the wiki example (``wikiapp.py``), published by traversal.

* ``Wiki`` is the root of the tree: a ``MongoContainer`` of pages (stored
  in the collection ``pages``), kept in the data manager's root under
  ``'wiki'``.  It declares ``__name__ = ''`` and ``__parent__ = None``:
  Pyramid's root.
* ``Page`` is a page and a container of sub-pages (in the same collection,
  referencing their parent page): ``/FrontPage/Details`` is the page
  ``Details`` in the page ``FrontPage``.  It is ``MongoContained``: its
  ``__name__`` is its ``key`` and its ``__parent__`` its ``parent``
  (stored by the container), so a page loaded any way knows its URL.

A page counts its edits in ``edits``.
"""
from mongopersist import container


class Wiki(container.MongoContainer):
    """The root of the wiki: its top-level pages."""
    _p_mongo_collection = 'wikis'
    _m_collection = 'pages'
    __name__ = ''
    __parent__ = None

    def __init__(self, title):
        super().__init__()
        self.title = title


class Page(container.MongoContained, container.MongoContainer):
    """A page: a title, a text, and sub-pages."""
    _p_mongo_collection = 'pages'
    _m_collection = 'pages'
    # Where a page loaded without its container finds its location.
    _m_name_attr = 'key'
    _m_parent_attr = 'parent'

    def __init__(self, title, text=''):
        super().__init__()
        self.title = title
        self.text = text
        self.edits = 0

    def __repr__(self):
        return '<Page %s>' % self.title


def appmaker(root):
    """The wiki of ``root`` (``dm.root``), made on first use: what
    ``mongopersist.pyramid.root_factory`` publishes."""
    if 'wiki' not in root:
        root['wiki'] = wiki = Wiki('A wiki on MongoDB')
        wiki['FrontPage'] = Page(
            'Front page', 'Welcome. Add pages below; each page can hold '
            'pages of its own.')
    return root['wiki']

