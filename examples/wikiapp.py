"""A wiki as a Pyramid web application published by traversal.

``make serve-traversal`` runs this file.  The URL path is the path of a
page in the tree of pages (``/FrontPage/Details``), found by Pyramid's
traversal from the root that ``mongopersist.pyramid.root_factory`` gives:
the ``Wiki`` of ``dm.root``, which ``wikimodel.appmaker`` makes on the
first request.  Each page shows its text and its sub-pages; ``edit``
changes it, ``add`` adds a sub-page, ``delete`` removes it with its
sub-pages.  Every link is made with ``request.resource_url``, from the
pages' ``__name__`` and ``__parent__``.

What the application does about MongoDB::

    config = Configurator(settings=settings,
                          root_factory=mongopersist.pyramid.root_factory)
    config.include('pyramid_retry')
    config.include('mongopersist.pyramid')

with ``mongopersist.appmaker = wikimodel:appmaker`` in ``wikiapp.ini``.
``make serve-traversal`` serves it with waitress on
http://127.0.0.1:6543/ (the in-process stand-in unless ``$MONGODB_URI``
is set; ``make serve-traversal PORT=8080`` picks another port).
"""
import html
import os
import re
import sys

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

import mongopersist.pyramid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from wikimodel import Page, Wiki  # noqa: E402

#: The application's settings: what ``make serve-traversal`` runs with.
INI = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'wikiapp.ini')

#: The names pages may have (they are path segments of their URL).
NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_-]{0,59}\Z')

#: The view names: no page may be named so.
VIEWS = ('edit', 'add', 'delete')


def settings(path=INI):
    """The settings of the ``[app:main]`` section of ``path``."""
    from pyramid.paster import get_appsettings
    return dict(get_appsettings(path))


def main(global_config=None, store=None, **settings):
    """Return the WSGI application (PasteDeploy's ``call:wikiapp:main``);
    ``store`` is a ready ``mongopersist.Store`` to use instead of making
    one from the settings."""
    config = Configurator(settings=settings,
                          root_factory=mongopersist.pyramid.root_factory)
    if store is not None:
        config.registry['mongopersist.store'] = store
    config.include('pyramid_retry')
    config.include('mongopersist.pyramid')
    config.add_view(show_wiki, context=Wiki)
    config.add_view(show_page, context=Page)
    config.add_view(edit_page, context=Page, name='edit')
    config.add_view(add_page, context=Wiki, name='add',
                    request_method='POST')
    config.add_view(add_page, context=Page, name='add',
                    request_method='POST')
    config.add_view(delete_page, context=Page, name='delete',
                    request_method='POST')
    return config.make_wsgi_app()


# -- views -------------------------------------------------------------------
def show_wiki(context, request):
    return page(context.title, children(context, request)
                + add_form(context, request))


def show_page(context, request):
    return page(context.title, '''
        <p>%s</p><p class="edits">edits: %d</p>%s%s
        <p><a href="%s">Edit</a> &middot; <a href="%s">Up</a></p>
        <form method="post" action="%s"><button>Delete</button></form>''' % (
        e(context.text), context.edits, children(context, request),
        add_form(context, request), request.resource_url(context, 'edit'),
        request.resource_url(context.__parent__),
        request.resource_url(context, 'delete')))


def edit_page(context, request):
    if request.method == 'POST':
        context.title = request.POST.get('title', '').strip() or \
            context.title
        context.text = request.POST.get('text', '')
        context.edits += 1
        return HTTPSeeOther(request.resource_url(context))
    return page('Edit ' + context.title, '''
        <form method="post">
          <p><input name="title" size="60" value="%s"></p>
          <p><textarea name="text" rows="8" cols="60">%s</textarea></p>
          <button>Save</button></form>''' % (e(context.title),
                                             e(context.text)))


def add_page(context, request):
    name = request.POST.get('name', '')
    title = request.POST.get('title', '').strip() or name
    if not NAME.match(name) or name in VIEWS:
        return page('Cannot add the page', '<p>A page name has 1 to 60 '
                    'letters, digits, "-" and "_", and is not one of %s.'
                    '</p>' % e(', '.join(VIEWS)), status=400)
    if name in context:
        return page('Cannot add the page', '<p>There is a page %s here '
                    'already.</p>' % e(name), status=409)
    context[name] = Page(title)
    return HTTPSeeOther(request.resource_url(context[name]))


def delete_page(context, request):
    parent = context.__parent__
    remove_tree(context)
    del parent[context.__name__]
    return HTTPSeeOther(request.resource_url(parent))


def remove_tree(page):
    """Delete the sub-pages of ``page``, deepest first."""
    for child in page.values():
        remove_tree(child)
    page.clear()


# -- rendering ---------------------------------------------------------------
def e(text):
    return html.escape(str(text))


def children(context, request):
    items = ''.join('<li><a href="%s">%s</a></li>' % (
        request.resource_url(child), e(child.title))
        for child in context.values())
    return '<ul class="pages">%s</ul>' % (items or '<li>No pages yet.</li>')


def add_form(context, request):
    return '''<form method="post" action="%s">
        <input name="name" placeholder="PageName">
        <input name="title" placeholder="title"> <button>Add a page</button>
        </form>''' % request.resource_url(context, 'add')


def page(title, body, status=200):
    return Response(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>%s</title>'
        '</head><body><h1>%s</h1>%s</body></html>' % (e(title), e(title),
                                                      body),
        status=status)


if __name__ == '__main__':
    import waitress
    waitress.serve(main(**settings()), host='127.0.0.1', port=6543)
