"""Importable classes with shard keys and declared indexes (issue 11)."""
import persistent
import pymongo


class Post(persistent.Persistent):
    """A blog post, sharded on (author, title), unique on them too."""
    _p_mongo_collection = 'posts'
    _p_mongo_shard_key = ('author', 'title')
    _p_mongo_indexes = [
        pymongo.IndexModel([('author', 1), ('title', 1)], unique=True),
    ]

    def __init__(self, author, title, body=''):
        self.author = author
        self.title = title
        self.body = body

    def __repr__(self):
        return '<Post %s/%s>' % (self.author, self.title)


class Blog(persistent.Persistent):
    """Not sharded: references its posts."""
    _p_mongo_collection = 'blogs'

    def __init__(self, title, posts=()):
        self.title = title
        self.posts = list(posts)


class Visit(persistent.Persistent):
    """Sharded on a hashed key."""
    _p_mongo_collection = 'visits'
    _p_mongo_shard_key = (('user', 'hashed'),)

    def __init__(self, user, page):
        self.user = user
        self.page = page


class Account(persistent.Persistent):
    """Not sharded, with a unique index on its email."""
    _p_mongo_collection = 'accounts'
    _p_mongo_indexes = [pymongo.IndexModel('email', unique=True)]

    def __init__(self, email):
        self.email = email
