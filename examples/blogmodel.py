"""The classes of the blog example (see ``blog.py``).

They live in a module of their own so that the dotted names stored in
MongoDB (``blogmodel.Comment``) are the same whether ``blog.py`` runs as a
script or is imported by the tests.

* ``Author`` and ``Post`` are persistent objects with collections of their
  own; a post refers to its author, stored as a ``DBRef``.
* ``Comment`` is a *sub-object* (``_p_mongo_sub_object = True``): it is
  stored inside its post's document and changing it gets the post written.
* ``Blog`` is the entry point stored in the data manager's root.
* ``Counter`` counts the likes of a post in the web application.

Times (``Post.published``, ``Post.edited``, ``Comment.written``) are naive
datetimes in UTC to the millisecond (``now()``): what a BSON date holds, so
they are stored as dates that queries can compare and sort.

Lists that are changed in place use ``mongopersist.serialize.PersistentList``
(stored as a plain array): a plain ``list`` attribute is only tracked once it
has been read back from MongoDB.
"""
import datetime

import persistent

from mongopersist.serialize import PersistentList


def now():
    """The current time as stored: naive UTC, to the millisecond."""
    moment = datetime.datetime.now(datetime.timezone.utc)
    return moment.replace(tzinfo=None,
                          microsecond=moment.microsecond // 1000 * 1000)


class Author(persistent.Persistent):
    """Someone who writes posts."""
    _p_mongo_collection = 'authors'

    def __init__(self, name, email):
        self.name = name
        self.email = email

    def __repr__(self):
        return '<Author %s>' % self.name


class Comment(persistent.Persistent):
    """A comment on a post, stored inside the post's document."""
    _p_mongo_sub_object = True

    #: When it was written (comments stored before there were times have
    #: none).
    written = None

    def __init__(self, who, text, written=None):
        self.who = who
        self.text = text
        self.written = written or now()

    def __repr__(self):
        return '<Comment by %s>' % self.who


class Post(persistent.Persistent):
    """A blog post: a reference to its author and embedded comments.

    ``published`` is when it was written (default: now); ``edited`` when it
    was last changed, ``None`` (not stored) until it is.
    """
    _p_mongo_collection = 'posts'

    edited = None

    def __init__(self, title, body, author, tags=(), published=None):
        self.title = title
        self.body = body
        self.author = author
        self.tags = list(tags)
        self.published = published or now()
        # A mongopersist PersistentList (not a plain list) so that appending
        # to it is noticed even before the post has been read back from
        # MongoDB: in-place changes of a plain list are not tracked.
        self.comments = PersistentList()

    def add_comment(self, who, text, written=None):
        """Add a comment (written ``written``, default now); it is stored
        with the post at commit."""
        comment = Comment(who, text, written)
        self.comments.append(comment)
        return comment

    def __repr__(self):
        return '<Post %s>' % self.title


class Blog(persistent.Persistent):
    """The blog: a title and its posts, newest last."""
    _p_mongo_collection = 'blogs'

    def __init__(self, title):
        self.title = title
        self.posts = PersistentList()

    def publish(self, post):
        """Add ``post`` to the blog; it is inserted at commit."""
        self.posts.append(post)
        return post


class Counter(persistent.Persistent):
    """A count and its log (who counted): the likes of a post in the web
    application (``blogapp.py``).  Both live in one document, so they
    always agree."""
    _p_mongo_collection = 'counters'

    def __init__(self):
        self.value = 0
        self.log = PersistentList()

    def increment(self, who):
        """Count one more, by ``who``; return the new value."""
        self.value += 1
        self.log.append(who)
        return self.value
