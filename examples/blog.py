"""A small blog stored with mongopersist: ``make demo`` runs this file.

The demo connects with ``mongopersist.connect(URI)``: ``make demo`` gives
it ``file://var/data`` (a directory store, served by SecantusDB in a
process of its own: the ``server`` extra), or the ``MONGODB_URI``
environment variable when it is set.  Without ``--uri`` it uses
``$MONGODB_URI``, else the in-process stand-in (mongomock; a warning says
the data lives in memory only).  It

1. creates a blog with two authors, two posts and comments, and commits;
2. changes a post, adds a comment and edits another in a second transaction;
3. loads everything again through a fresh data manager and prints it;
4. prints the raw documents stored in MongoDB.

Run it with ``make demo`` or ``.venv/bin/python examples/blog.py [--uri
URI]``.  The same blog as a web application: ``blogapp.py`` (``make
serve``).
"""
import argparse
import datetime
import os
import pprint
import sys

import transaction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mongopersist  # noqa: E402
from blogmodel import Author, Blog, Post  # noqa: E402
from mongopersist import testing  # noqa: E402
from mongopersist.datamanager import MongoDataManager  # noqa: E402

DATABASE = 'mongopersist_blog_demo'
COLLECTIONS = ('blogs', 'posts', 'authors', 'persistence_root')


def write_blog(dm):
    """First transaction: the blog, its authors, posts and comments."""
    stephan = Author('Stephan', 'stephan@example.com')
    roy = Author('Roy', 'roy@example.com')
    blog = Blog('Notes on persistence')
    # The root is written at once; everything reachable from the blog is
    # written when the transaction commits.
    dm.root['blog'] = blog
    first = blog.publish(Post(
        'Objects in MongoDB', 'Persistent objects, stored as documents.',
        stephan, tags=['mongodb', 'python'],
        published=datetime.datetime(2024, 3, 1, 9, 30)))
    blog.publish(Post(
        'Transactions', 'Nothing is written until commit.', roy,
        tags=['transactions'], published=datetime.datetime(2024, 3, 2, 17, 0)))
    first.add_comment('Roy', 'Nice!',
                      written=datetime.datetime(2024, 3, 1, 11, 5))
    transaction.commit()


def edit_blog(dm):
    """Second transaction: changes are tracked, no explicit save."""
    blog = dm.root['blog']
    first, second = blog.posts
    first.title = 'Objects in MongoDB, the easy way'
    first.comments[0].text = 'Nice! Very readable documents.'
    second.add_comment('Stephan', 'Agreed.',
                       written=datetime.datetime(2024, 3, 3, 8, 15))
    second.tags.append('python')
    transaction.commit()


def describe_blog(dm, out):
    """Print the blog as a fresh data manager loads it; return a summary."""
    blog = dm.root['blog']
    summary = {'title': blog.title, 'posts': []}
    print('Blog: %s' % blog.title, file=out)
    for post in blog.posts:
        print('  %s by %s <%s> on %s, tags: %s' % (
            post.title, post.author.name, post.author.email,
            post.published.date().isoformat(), ', '.join(post.tags)),
            file=out)
        for comment in post.comments:
            print('    %s: %s' % (comment.who, comment.text), file=out)
        summary['posts'].append({
            'title': post.title,
            'author': post.author.name,
            'author_class': type(post.author).__name__,
            'tags': list(post.tags),
            'comments': [(type(c).__name__, c.who, c.text)
                         for c in post.comments],
        })
    return summary


def stored_documents(client, dbname):
    """Return the raw documents of the demo's collections."""
    db = client[dbname]
    return {name: list(db[name].find().sort('_id'))
            for name in COLLECTIONS}


def main(client=None, dbname=DATABASE, out=None, uri=None):
    """Run the demo; return the reloaded summary and the raw documents.

    Without ``client``, on the store of ``uri`` (``mongopersist.connect``:
    without one, ``$MONGODB_URI``, else the in-process stand-in).
    """
    out = out or sys.stdout
    store = None
    if client is None:
        store = mongopersist.connect(uri, database=dbname)
        client = store.client
    try:
        return run(client, dbname, out)
    finally:
        if store is not None:
            store.close()


def run(client, dbname, out):
    """The demo on ``client``'s database ``dbname``."""
    # Start from an empty demo database (it only holds what this writes).
    client.drop_database(dbname)
    transaction.abort()

    dm = MongoDataManager(client, default_database=dbname)
    write_blog(dm)
    edit_blog(dm)

    print('--- Reloaded by a fresh data manager', file=out)
    fresh = MongoDataManager(client, default_database=dbname)
    summary = describe_blog(fresh, out)
    transaction.abort()

    print('\n--- Stored documents', file=out)
    documents = stored_documents(client, dbname)
    for name, docs in documents.items():
        print('\n%s.%s:' % (dbname, name), file=out)
        pprint.pprint(docs, stream=out)

    tagged = client[dbname]['posts'].count_documents({'tags': 'python'})
    print('\nPosts tagged "python" (a plain MongoDB query): %d' % tagged,
          file=out)
    return summary, documents


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='The blog demo.')
    parser.add_argument(
        '--uri', help='where to store the blog: file://DIR, mongodb://... '
        '(default: $MONGODB_URI, else the in-process stand-in)')
    uri = parser.parse_args().uri
    where = uri or ('MongoDB at $MONGODB_URI' if testing.uses_real_server()
                    else 'the in-process stand-in (give --uri file://DIR '
                    'to keep the data)')
    print('mongopersist blog demo on %s\n' % where)
    main(uri=uri)
