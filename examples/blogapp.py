"""The blog as a Pyramid web application: ``make serve`` runs this file.

Posts, authors and comments (the classes of ``blogmodel.py``) in a browser:
list the posts, show one, add one, edit one, comment on it, like it, and
list the authors.  The likes of a post are a ``blogmodel.Counter`` (a count
and a log of who liked) that many people may increment at the same time:
conflicting requests are retried, so no like is lost (the load test in
``tests/test_load.py`` shows it with a real HTTP server).

What the application does about MongoDB is two lines of ``main``::

    config.include('pyramid_retry')          # run conflicting requests again
    config.include('mongopersist.pyramid')   # the store, request.tm, request.dm

and views that use ``request.dm``; ``pyramid_tm`` commits when the view
returns and aborts when it raises.

Its settings are in ``blogapp.ini``.  ``make serve`` serves it with
waitress (``pserve examples/blogapp.ini``) on http://127.0.0.1:6543/, with
the posts in the directory ``var/data`` (a ``file://`` store: they outlive
restarts); ``make serve PORT=8080`` picks another port.  ``python
examples/blogapp.py [--port N]`` does the same without pserve.
"""
import argparse
import html
import os
import sys

from bson.objectid import ObjectId
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.response import Response

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from blogmodel import Author, Blog, Counter, Post  # noqa: E402

#: The application's settings (``mongopersist.*``, pyramid_tm's,
#: pyramid_retry's): what ``make serve`` runs with.
INI = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'blogapp.ini')


def settings(path=INI):
    """The settings of the ``[app:main]`` section of ``path``."""
    from pyramid.paster import get_appsettings
    return dict(get_appsettings(path))


def main(global_config=None, store=None, **settings):
    """Return the WSGI application (PasteDeploy's ``call:blogapp:main``).

    ``settings`` are Pyramid settings (``mongopersist.*`` among them, see
    ``mongopersist.store_from_settings``), as in ``blogapp.ini``; ``store``
    is a ready ``mongopersist.Store`` to use instead of making one from
    them.
    """
    config = Configurator(settings=settings)
    if store is not None:
        config.registry['mongopersist.store'] = store
    config.include('pyramid_retry')
    config.include('mongopersist.pyramid')
    config.add_route('posts', '/')
    config.add_route('add', '/posts/add')
    config.add_route('show', '/posts/{id}')
    config.add_route('edit', '/posts/{id}/edit')
    config.add_route('comment', '/posts/{id}/comments')
    config.add_route('like', '/posts/{id}/like')
    config.add_route('authors', '/authors')
    config.add_view(list_posts, route_name='posts')
    config.add_view(add_post, route_name='add')
    config.add_view(show_post, route_name='show')
    config.add_view(edit_post, route_name='edit')
    config.add_view(add_comment, route_name='comment', request_method='POST')
    config.add_view(like_post, route_name='like', request_method='POST')
    config.add_view(list_authors, route_name='authors')
    app = config.make_wsgi_app()
    create_blog(config.registry['mongopersist.store'])
    return app


def create_blog(store, title='Notes on persistence'):
    """Store an empty blog unless there is one (a script's transaction)."""
    for attempt in store.transaction():
        with attempt as dm:
            if 'blog' not in dm.root:
                dm.root['blog'] = Blog(title)


# -- views -------------------------------------------------------------------
def list_posts(request):
    blog = request.dm.root['blog']
    items = ''.join(
        '<li><a href="%s">%s</a> by %s, %d comments, %d likes</li>' % (
            request.route_url('show', id=post_id(post)), e(post.title),
            e(post.author.name), len(post.comments), likes(post).value)
        for post in blog.posts)
    return page(blog.title, '<ul>%s</ul><p><a href="%s">Write a post</a> '
                '&middot; <a href="%s">Authors</a></p>' % (
                    items or '<li>No posts yet.</li>',
                    request.route_url('add'), request.route_url('authors')))


def show_post(request):
    post = find_post(request)
    counter = likes(post)
    comments = ''.join('<li><b>%s</b>: %s</li>' % (e(c.who), e(c.text))
                       for c in post.comments)
    return page(post.title, '''
        <p>by %s &lt;%s&gt; on %s; tags: %s</p>
        <div>%s</div>
        <form method="post" action="%s"><input name="who" placeholder="you">
          <button>Like</button> %d likes (last: %s)</form>
        <h2>Comments</h2><ul>%s</ul>
        <form method="post" action="%s">
          <input name="who" placeholder="name"><br>
          <textarea name="text" rows="3" cols="60"></textarea><br>
          <button>Comment</button></form>
        <p><a href="%s">Edit</a> &middot; <a href="%s">All posts</a></p>
        ''' % (e(post.author.name), e(post.author.email),
               post.published.date().isoformat(), e(', '.join(post.tags)),
               e(post.body), request.route_url('like', id=post_id(post)),
               counter.value, e(', '.join(counter.log[-3:]) or '-'),
               comments or '<li>No comments yet.</li>',
               request.route_url('comment', id=post_id(post)),
               request.route_url('edit', id=post_id(post)),
               request.route_url('posts')))


def add_post(request):
    if request.method == 'POST':
        form = request.POST
        name = form.get('author', '').strip()
        title = form.get('title', '').strip()
        if not name or not title:
            return post_form(request, 'Write a post', form,
                             error='A post needs a title and an author.')
        author = request.dm.find_one_object(Author, {'name': name})
        if author is None:
            author = Author(name, form.get('email', '').strip())
        post = Post(title, form.get('body', ''), author,
                    tags=form.get('tags', '').replace(',', ' ').split())
        post.likes = Counter()
        # Inserted now to know its id; written at commit.
        request.dm.insert(post)
        request.dm.root['blog'].publish(post)
        return HTTPSeeOther(request.route_url('show', id=post_id(post)))
    return post_form(request, 'Write a post', {})


def edit_post(request):
    post = find_post(request)
    if request.method == 'POST':
        form = request.POST
        title = form.get('title', '').strip()
        if not title:
            return post_form(request, 'Edit', form,
                             error='A post needs a title.')
        post.title = title
        post.body = form.get('body', '')
        post.tags = form.get('tags', '').replace(',', ' ').split()
        return HTTPSeeOther(request.route_url('show', id=post_id(post)))
    return post_form(request, 'Edit %s' % post.title, {
        'title': post.title, 'body': post.body,
        'tags': ' '.join(post.tags), 'author': post.author.name,
        'email': post.author.email}, editing=True)


def add_comment(request):
    post = find_post(request)
    text = request.POST.get('text', '').strip()
    if text:
        post.add_comment(request.POST.get('who', '').strip() or 'anonymous',
                         text)
    return HTTPSeeOther(request.route_url('show', id=post_id(post)))


def like_post(request):
    """Count a like.  Answers JSON (``{"likes": n}``) to clients that ask
    for it, and sends browsers back to the post."""
    post = find_post(request)
    who = request.POST.get('who', '').strip() or 'anonymous'
    value = likes(post, create=True).increment(who)
    if 'application/json' in request.headers.get('Accept', ''):
        return Response(json_body={'likes': value})
    return HTTPSeeOther(request.route_url('show', id=post_id(post)))


def list_authors(request):
    blog = request.dm.root['blog']
    written = {}
    for post in blog.posts:
        written.setdefault(post.author.name, []).append(post)
    items = ''.join(
        '<li>%s &lt;%s&gt;: %s</li>' % (e(author.name), e(author.email), ', '.join(
            '<a href="%s">%s</a>' % (request.route_url('show', id=post_id(p)),
                                     e(p.title))
            for p in written.get(author.name, ())))
        for author in request.dm.find_objects(Author, sort='name'))
    return page('Authors', '<ul>%s</ul><p><a href="%s">All posts</a></p>' % (
        items or '<li>Nobody yet.</li>', request.route_url('posts')))


# -- helpers -----------------------------------------------------------------
def find_post(request):
    """The post named by the URL, or 404."""
    try:
        oid = ObjectId(request.matchdict['id'])
    except Exception:
        raise HTTPNotFound('No such post')
    post = request.dm.find_one_object(Post, {'_id': oid})
    if post is None:
        raise HTTPNotFound('No such post')
    return post


def post_id(post):
    return str(post._p_oid.id)


_NO_LIKES = Counter()


def likes(post, create=False):
    """The like counter of ``post`` (posts made elsewhere have none yet)."""
    counter = getattr(post, 'likes', None)
    if counter is None:
        if not create:
            return _NO_LIKES
        counter = post.likes = Counter()
    return counter


def e(text):
    return html.escape(str(text))


def post_form(request, title, values, error=None, editing=False):
    def field(name):
        return e(values.get(name, ''))
    author = ('<p>by %s</p>' % field('author') if editing else
              '<p><input name="author" placeholder="author" value="%s"> '
              '<input name="email" placeholder="email" value="%s"></p>' % (
                  field('author'), field('email')))
    return page(title, '''
        %s<form method="post">
          <p><input name="title" placeholder="title" size="60" value="%s"></p>
          %s
          <p><textarea name="body" rows="8" cols="60">%s</textarea></p>
          <p><input name="tags" placeholder="tags" value="%s"></p>
          <button>Save</button></form>
        <p><a href="%s">All posts</a></p>''' % (
        '<p class="error">%s</p>' % e(error) if error else '',
        field('title'), author, field('body'), field('tags'),
        request.route_url('posts')), status=400 if error else 200)


def page(title, body, status=200):
    return Response(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>%s</title>'
        '</head><body><h1>%s</h1>%s</body></html>' % (e(title), e(title),
                                                      body),
        status=status)


def serve(argv=None):
    """Serve the application with waitress, as ``make serve`` does."""
    import waitress
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=6543)
    args = parser.parse_args(argv)
    app = main(**settings())
    print('Serving the blog on http://%s:%d/ (Ctrl-C stops)'
          % (args.host, args.port))
    waitress.serve(app, host=args.host, port=args.port, threads=8)


if __name__ == '__main__':
    serve()
