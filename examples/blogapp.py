"""The blog as a Pyramid web application: ``make serve`` runs this file.

Posts, authors and comments (the classes of ``blogmodel.py``) in a browser:
list the posts, show one, write one, edit one, comment on it, like it, and
list the authors.  The likes of a post are a ``blogmodel.Counter`` (a count
and a log of who liked) that many people may increment at the same time:
conflicting requests are retried, so no like is lost (the load test in
``tests/test_load.py`` shows it with a real HTTP server).

What the application does about MongoDB is two lines of ``main``::

    config.include('pyramid_retry')          # run conflicting requests again
    config.include('mongopersist.pyramid')   # the store, request.tm, request.dm

and views that use ``request.dm``; ``pyramid_tm`` commits when the view
returns and aborts when it raises or answers an error (``tm.commit_veto``
in ``blogapp.ini``: a refused form stores nothing).

**Editing.**  Two people (or two tabs) may edit one post at once.  The edit
form carries the version of the post it was opened on (the post's
``_p_serial``, which the library bumps at every commit of its document)
and a digest of the title, body and tags it showed.  A save whose post has
moved on since, in those fields, is not written: the page shows both
versions and asks which to keep (``409 Conflict``).  A save racing another
commit between reading the post and committing it is the library's own
``ConflictError``: pyramid_retry runs the request again, which then sees
the other version and asks.  A change elsewhere in the post's document (a
comment) does not stop a save of the title, body or tags.

**Input.**  Every form field is checked on the server (required, length,
no control characters, an email address that looks like one, an author
name that belongs to another email address); each refused field is named
on the page (``400``) and nothing is stored.  Everything shown is escaped.

Its settings are in ``blogapp.ini``, logging included (an access line per
request, ``mongopersist``'s log).  ``make serve`` serves it with waitress
(``pserve examples/blogapp.ini``) on http://127.0.0.1:6543/, with the posts
in the directory ``var/data`` (a ``file://`` store: they outlive
restarts); ``make serve PORT=8080`` picks another port.  ``python
examples/blogapp.py [--port N] [--uri URI]`` does the same without pserve.
"""
import argparse
import hashlib
import html
import json
import logging
import os
import re
import signal
import sys
import time
import unicodedata
import urllib.parse

from bson.objectid import ObjectId
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.response import Response
from pyramid.settings import asbool

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from blogmodel import Author, Blog, Counter, Post, now  # noqa: E402

#: The application's settings (``mongopersist.*``, pyramid_tm's,
#: pyramid_retry's) and logging: what ``make serve`` runs with.
INI = os.path.join(HERE, 'blogapp.ini')

#: The stylesheet, served at ``/blog.css``.
STYLESHEET = os.path.join(HERE, 'blogapp.css')

#: The logger of the access lines (one per request).
ACCESS_LOG = logging.getLogger('blogapp.access')

#: The most characters a field takes (``tag``: one tag; ``tags``: how
#: many tags).  Longer input is refused, not cut.
LIMITS = {'title': 200, 'author': 80, 'email': 254, 'body': 50000,
          'tag': 30, 'tags': 10, 'who': 80, 'text': 5000}

EMAIL = re.compile(r'[^@\s]+@[^@\s]+\.[^@\s]+')


def settings(path=INI):
    """The settings of the ``[app:main]`` section of ``path``."""
    from pyramid.paster import get_appsettings
    return dict(get_appsettings(path))


def main(global_config=None, store=None, **settings):
    """Return the WSGI application (PasteDeploy's ``call:blogapp:main``).

    ``settings`` are Pyramid settings (``mongopersist.*`` among them, see
    ``mongopersist.store_from_settings``), as in ``blogapp.ini``; ``store``
    is a ready ``mongopersist.Store`` to use instead of making one from
    them.  With ``blogapp.access_log = true`` each request is logged (see
    ``access_log``).
    """
    config = Configurator(settings=settings)
    if store is not None:
        config.registry['mongopersist.store'] = store
    config.include('pyramid_retry')
    config.include('mongopersist.pyramid')
    config.add_request_method(stored_blog, 'blog', reify=True)
    routes = [
        # name, pattern, {method: view}
        ('posts', '/', {'GET': list_posts}),
        ('add', '/posts/add', {'GET': add_post, 'POST': add_post}),
        ('show', '/posts/{id}', {'GET': show_post}),
        ('edit', '/posts/{id}/edit', {'GET': edit_post, 'POST': edit_post}),
        ('comment', '/posts/{id}/comments', {'POST': add_comment}),
        ('like', '/posts/{id}/like', {'POST': like_post}),
        ('authors', '/authors', {'GET': list_authors}),
        ('style', '/blog.css', {'GET': stylesheet(STYLESHEET)}),
    ]
    for name, pattern, views in routes:
        config.add_route(name, pattern)
        for method, view in views.items():
            config.add_view(view, route_name=name, request_method=method)
        # Views with fewer predicates are tried last: any other method.
        config.add_view(method_not_allowed(sorted(views)), route_name=name)
    config.add_notfound_view(not_found)
    app = config.make_wsgi_app()
    create_blog(config.registry['mongopersist.store'])
    if asbool(settings.get('blogapp.access_log', False)):
        return access_log(app)
    return app


def create_blog(store, title='Notes on persistence'):
    """Store an empty blog unless there is one (a script's transaction)."""
    for attempt in store.transaction():
        with attempt as dm:
            if 'blog' not in dm.root:
                dm.root['blog'] = Blog(title)


def stored_blog(request):
    """The blog (``request.blog``): read from the root once per request
    (root entries are read again at each lookup), ``None`` if missing."""
    return request.dm.root.get('blog')


# -- views -------------------------------------------------------------------
def list_posts(request):
    blog = request.blog
    items = ''.join(
        '<li><a href="%s" class="title">%s</a>'
        '<p class="meta">by %s &middot; %s &middot; %s &middot; %s</p>%s'
        '</li>' % (
            request.route_url('show', id=post_id(post)), e(post.title),
            e(post.author.name), when(post.published),
            count(len(post.comments), 'comment'),
            count(likes(post).value, 'like'), tag_list(post.tags))
        for post in reversed(blog.posts))
    return page(request, blog.title, '''
        <p class="actions"><a class="button" href="%s">Write a post</a></p>
        <ol class="posts">%s</ol>''' % (
        request.route_url('add'),
        items or '<li class="empty">No posts yet.</li>'))


def show_post(request, comment_form=None, like_form=None, status=200):
    """The post, its likes and comments, with the forms to like and
    comment (``comment_form``/``like_form``: ``(values, refusals)`` to show
    again)."""
    post = find_post(request)
    counter = likes(post)
    comments = ''.join(
        '<li><p class="meta"><b>%s</b>%s</p><div class="text">%s</div>'
        '</li>' % (e(c.who), ' &middot; %s' % when(c.written)
                   if c.written else '', paragraphs(c.text))
        for c in post.comments)
    values, refused = like_form or ({}, {})
    like = '''
        <form method="post" action="%s" class="like" novalidate>%s
          %s <button>Like</button></form>
        <p class="likes">%s%s</p>''' % (
        request.route_url('like', id=post_id(post)), refusal_list(refused),
        field('who', 'Your name', values, refused, prefix='like-',
              hint='optional'),
        count(counter.value, 'like'),
        ' (last: %s)' % e(', '.join(counter.log[-3:]))
        if counter.value else '')
    values, refused = comment_form or ({}, {})
    comment = '''
        <form method="post" action="%s" id="comment-form" novalidate>
          <h3>Add a comment</h3>%s
          %s
          %s
          <button>Comment</button></form>''' % (
        request.route_url('comment', id=post_id(post)),
        refusal_list(refused),
        field('who', 'Your name', values, refused, prefix='comment-',
              hint='optional'),
        field('text', 'Comment', values, refused, prefix='comment-',
              rows=4))
    return page(request, post.title, '''
        <article class="post">
          <p class="meta">by %s &middot; %s%s</p>%s
          <div class="body">%s</div>
        </article>
        <p class="actions"><a class="button secondary" href="%s">Edit</a>
          <a href="%s">All posts</a></p>
        <section class="like-box">%s</section>
        <section class="comments" id="comments"><h2>%s</h2>
          <ol>%s</ol>%s</section>''' % (
        author_link(request, post.author), when(post.published),
        ' &middot; edited %s' % when(post.edited) if post.edited else '',
        tag_list(post.tags), paragraphs(post.body),
        request.route_url('edit', id=post_id(post)),
        request.route_url('posts'), like,
        count(len(post.comments), 'comment'),
        comments or '<li class="empty">No comments yet.</li>', comment),
        status=status)


def add_post(request):
    if request.method != 'POST':
        return post_form(request, 'Write a post', {})
    form = request.POST
    refused = {}
    values = {
        'title': line(form, 'title', refused, required='A post needs a '
                      'title.'),
        'author': line(form, 'author', refused, required='Give your '
                       'name.'),
        'email': line(form, 'email', refused, required='Give your email '
                      'address.'),
        'body': text(form, 'body', refused),
    }
    tags = tag_field(form, refused)
    values['tags'] = ' '.join(tags) if 'tags' not in refused else form.get(
        'tags', '')
    if 'email' not in refused and not EMAIL.fullmatch(values['email']):
        refused['email'] = 'That is not an email address (name@example.com).'
    author = None
    if 'author' not in refused:
        author = request.dm.find_one_object(Author, {'name': values['author']})
    if (author is not None and 'email' not in refused
            and author.email.lower() != values['email'].lower()):
        refused['email'] = (
            '%s already writes here with another email address: give that '
            'one, or another name.' % values['author'])
    if refused:
        return post_form(request, 'Write a post', values, refused)
    if author is None:
        author = Author(values['author'], values['email'])
    post = Post(values['title'], values['body'], author, tags=tags)
    post.likes = Counter()
    # Inserted now to know its id; written at commit.
    request.dm.insert(post)
    request.dm.root['blog'].publish(post)
    return HTTPSeeOther(request.route_url('show', id=post_id(post)))


def edit_post(request):
    """Edit a post, unless somebody else changed it meanwhile: then show
    both versions and ask (see the module's docstring)."""
    post = find_post(request)
    if request.method != 'POST':
        return post_form(request, 'Edit %s' % post.title,
                         edited_fields(post), editing=post)
    form = request.POST
    refused = {}
    values = {
        'title': line(form, 'title', refused, required='A post needs a '
                      'title.'),
        'body': text(form, 'body', refused),
    }
    tags = tag_field(form, refused)
    values['tags'] = ' '.join(tags) if 'tags' not in refused else form.get(
        'tags', '')
    serial, base = form.get('serial', ''), form.get('base', '')
    if not (serial.isascii() and serial.isdigit() and len(serial) < 20
            and re.fullmatch('[0-9a-f]{64}', base)):
        refused['form'] = ('This form is damaged or out of date: open the '
                           'post and edit it again.')
    values.update(serial=serial, base=base)
    if refused:
        return post_form(request, 'Edit %s' % post.title, values, refused,
                         editing=post)
    mine = (values['title'], values['body'], tags)
    theirs = (post.title, post.body, list(post.tags))
    if mine == theirs:
        return HTTPSeeOther(request.route_url('show', id=post_id(post)))
    if int(serial) != version(post) and digest(*theirs) != base:
        # Somebody saved these fields since this form was opened.
        return conflict_page(request, post, values)
    post.title, post.body, post.tags = mine
    post.edited = now()
    # Written at commit, on the condition that the stored version is still
    # the one read here; else ConflictError, and pyramid_retry runs this
    # request again, which then finds the other version and asks.
    return HTTPSeeOther(request.route_url('show', id=post_id(post)))


def add_comment(request):
    post = find_post(request)
    form = request.POST
    refused = {}
    values = {
        'who': line(form, 'who', refused),
        'text': text(form, 'text', refused,
                     required='A comment needs some text.'),
    }
    if refused:
        return show_post(request, comment_form=(values, refused), status=400)
    post.add_comment(values['who'] or 'anonymous', values['text'],
                     written=now())
    return HTTPSeeOther(request.route_url('show', id=post_id(post))
                        + '#comments')


def like_post(request):
    """Count a like.  Answers JSON (``{"likes": n}``, or ``{"refused":
    {field: message}}`` with 400) to clients that ask for it, and sends
    browsers back to the post."""
    post = find_post(request)
    refused = {}
    who = line(request.POST, 'who', refused)
    wants_json = 'application/json' in request.headers.get('Accept', '')
    if refused:
        if wants_json:
            return Response(json_body={'refused': refused}, status=400)
        return show_post(request, like_form=({'who': who}, refused),
                         status=400)
    value = likes(post, create=True).increment(who or 'anonymous')
    if wants_json:
        return Response(json_body={'likes': value})
    return HTTPSeeOther(request.route_url('show', id=post_id(post)))


def list_authors(request):
    blog = request.blog
    written = {}
    for post in blog.posts:
        written.setdefault(post.author._p_oid, []).append(post)
    items = ''.join(
        '<li id="author-%s"><b>%s</b> &lt;%s&gt;<p class="meta">%s%s</p>'
        '</li>' % (
            author._p_oid.id, e(author.name), e(author.email),
            count(len(written.get(author._p_oid, ())), 'post'),
            ': ' + ', '.join(
                '<a href="%s">%s</a>' % (
                    request.route_url('show', id=post_id(p)), e(p.title))
                for p in written[author._p_oid])
            if author._p_oid in written else '')
        for author in request.dm.find_objects(Author, sort='name'))
    return page(request, 'Authors', '<ul class="authors">%s</ul>' % (
        items or '<li class="empty">Nobody yet.</li>'))


def not_found(request):
    """Any address that names nothing: a page with a way back."""
    return page(request, 'Not found', '''
        <p>There is nothing at this address: no such post, or a mistyped
        link.</p>
        <p class="actions"><a class="button" href="%s">All posts</a></p>
        ''' % request.route_url('posts'), status=404)


def method_not_allowed(allowed):
    """A view answering 405 for the methods a route does not take."""
    def view(request):
        back = request.route_url('posts')
        if 'id' in request.matchdict:
            back = request.route_url('show', id=request.matchdict['id'])
        response = page(request, 'Not here', '''
            <p>This address takes %s requests only: liking and commenting
            are buttons on a post's page.</p>
            <p class="actions"><a class="button" href="%s">Back</a></p>''' % (
            e(' or '.join(allowed)), back), status=405)
        response.allow = allowed
        return response
    return view


def stylesheet(path):
    """A view answering the stylesheet at ``path``."""
    with open(path, 'rb') as f:
        css = f.read()

    def view(request):
        return Response(css, content_type='text/css', charset='utf-8',
                        cache_control='max-age=3600')
    return view


# -- the conflict ------------------------------------------------------------
def conflict_page(request, post, mine):
    """Both versions of ``post`` (``mine``: the form's values) and the
    question: save mine over theirs, or keep theirs."""
    theirs = edited_fields(post)
    return page(request, 'Somebody else changed this post', '''
        <p class="warning">Since you opened the editor, this post was saved
        by somebody else%s.  Your changes are not saved yet: compare the two
        versions, then save yours (edited here if you like) over theirs, or
        keep theirs.</p>
        <div class="versions">
          <section class="theirs"><h2>Their version (saved)</h2>
            <h3>%s</h3>%s<div class="body">%s</div>
            <p><a class="button secondary" href="%s">Keep theirs</a></p>
          </section>
          <section class="mine"><h2>Your version (not saved)</h2>
            %s</section>
        </div>''' % (
        ' (%s)' % when(post.edited) if post.edited else '',
        e(theirs['title']), tag_list(theirs['tags'].split()),
        paragraphs(theirs['body']),
        request.route_url('show', id=post_id(post)),
        edit_form(request, post, dict(
            mine, serial=str(version(post)), base=theirs['base']), {},
            button='Save mine over theirs')), status=409)


def version(post):
    """The stored version of ``post`` it was loaded at: its ``_p_serial``
    (the document's ``_py_serial``) as a number."""
    post._p_activate()
    return int.from_bytes(post._p_serial, 'big')


def digest(title, body, tags):
    """A digest of what the edit form edits."""
    return hashlib.sha256(json.dumps(
        [title, body, list(tags)]).encode('utf-8')).hexdigest()


def edited_fields(post):
    """The edit form's values for ``post`` as stored: the fields, the
    version and their digest."""
    return {'title': post.title, 'body': post.body,
            'tags': ' '.join(post.tags), 'serial': str(version(post)),
            'base': digest(post.title, post.body, post.tags)}


# -- input -------------------------------------------------------------------
def line(form, name, refused, required=None):
    """The one-line field ``name`` of ``form``, stripped; a refusal goes
    into ``refused[name]``."""
    value = form.get(name, '').strip()
    check(name, value, refused, required, allowed='')
    return value


def text(form, name, refused, required=None):
    """The text field ``name`` of ``form``: line breaks kept (as
    ``\\n``), spaces around it stripped."""
    value = form.get(name, '').replace('\r\n', '\n').replace('\r', '\n')
    value = value.strip()
    check(name, value, refused, required, allowed='\n\t')
    return value


def tag_field(form, refused):
    """The tags of ``form`` (separated by commas or spaces), each once."""
    value = form.get('tags', '')
    tags = list(dict.fromkeys(value.replace(',', ' ').split()))
    if any(unicodedata.category(c) == 'Cc' for c in value if c not in
           ' \t\r\n'):
        refused['tags'] = 'Control characters are not allowed here.'
    elif len(tags) > LIMITS['tags']:
        refused['tags'] = 'At most %d tags (this has %d).' % (
            LIMITS['tags'], len(tags))
    else:
        long = [tag for tag in tags if len(tag) > LIMITS['tag']]
        if long:
            refused['tags'] = 'A tag has at most %d characters: %s.' % (
                LIMITS['tag'], ', '.join(
                    repr(tag[:LIMITS['tag']] + '...') for tag in long))
    return tags


def check(name, value, refused, required, allowed):
    """Refuse ``value`` (into ``refused[name]``) if it is missing and
    ``required`` (the message), too long, or has control characters other
    than ``allowed``."""
    if not value:
        if required:
            refused[name] = required
    elif len(value) > LIMITS[name]:
        refused[name] = 'At most %d characters (this has %d).' % (
            LIMITS[name], len(value))
    elif any(unicodedata.category(c) == 'Cc' for c in value
             if c not in allowed):
        refused[name] = 'Control characters are not allowed here.'


# -- helpers -----------------------------------------------------------------
def find_post(request):
    """The post named by the URL, or 404."""
    try:
        oid = ObjectId(request.matchdict['id'])
    except Exception:
        raise HTTPNotFound()
    post = request.dm.find_one_object(Post, {'_id': oid})
    if post is None:
        raise HTTPNotFound()
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
    """``text`` escaped for HTML, in text and in quoted attributes."""
    return html.escape(str(text), quote=True)


def count(n, noun):
    """``1 comment``, ``2 comments``."""
    return '%d %s%s' % (n, noun, '' if n == 1 else 's')


def when(moment):
    """A stored time (naive UTC) for people, with its machine form."""
    return '<time datetime="%sZ">%d %s %d, %02d:%02d UTC</time>' % (
        moment.isoformat(timespec='seconds'), moment.day,
        moment.strftime('%B'), moment.year, moment.hour, moment.minute)


def paragraphs(text):
    """``text`` as HTML: a blank line starts a paragraph, a line break is
    kept."""
    blocks = re.split(r'\n[ \t]*\n', text)
    return ''.join('<p>%s</p>' % '<br>\n'.join(
        e(part) for part in block.strip('\n').split('\n'))
        for block in blocks if block.strip())


def tag_list(tags):
    if not tags:
        return ''
    return '<ul class="tags">%s</ul>' % ''.join(
        '<li>%s</li>' % e(tag) for tag in tags)


def author_link(request, author):
    return '<a href="%s#author-%s">%s</a> &lt;%s&gt;' % (
        request.route_url('authors'), author._p_oid.id, e(author.name),
        e(author.email))


def field(name, label, values, refused, prefix='', rows=None, hint=None):
    """A labelled form field (an input, or a textarea with ``rows``), its
    value from ``values`` and its refusal from ``refused``."""
    ident = prefix + name
    message = refused.get(name)
    attributes = 'id="%s" name="%s"%s' % (
        ident, name, ' aria-invalid="true" aria-describedby="%s-error"'
        % ident if message else '')
    if rows:
        control = '<textarea %s rows="%d">%s</textarea>' % (
            attributes, rows, e(values.get(name, '')))
    else:
        control = '<input %s value="%s">' % (attributes,
                                             e(values.get(name, '')))
    return '''<p class="field%s"><label for="%s">%s%s</label>
        %s%s</p>''' % (
        ' invalid' if message else '', ident, e(label),
        ' <small>(%s)</small>' % e(hint) if hint else '', control,
        '<span class="error" id="%s-error">%s</span>' % (ident, e(message))
        if message else '')


def refusal_list(refused):
    """The summary of a refused form: how many fields to correct, and any
    refusal of the form as a whole."""
    if not refused:
        return ''
    whole = refused.get('form')
    fields = len(refused) - (whole is not None)
    return '<div class="error-summary" role="alert">%s%s</div>' % (
        '<p>%s</p>' % e(whole) if whole else '',
        '<p>Please correct %s below.</p>' % (
            'the field' if fields == 1 else 'the %d fields' % fields)
        if fields else '')


def post_form(request, title, values, refused=None, editing=None):
    """The form to write a post, or to edit ``editing``."""
    refused = refused or {}
    if editing is not None:
        body = edit_form(request, editing, values, refused)
    else:
        body = '''<form method="post" class="post-form" novalidate>%s
          %s
          <div class="pair">%s %s</div>
          %s
          %s
          <p><button>Publish</button></p></form>''' % (
            refusal_list(refused),
            field('title', 'Title', values, refused),
            field('author', 'Your name', values, refused),
            field('email', 'Email', values, refused),
            field('body', 'Text', values, refused, rows=12,
                  hint='a blank line starts a paragraph'),
            field('tags', 'Tags', values, refused,
                  hint='separated by spaces or commas'))
    return page(request, title, '%s<p class="actions"><a href="%s">All '
                'posts</a></p>' % (body, request.route_url('posts')),
                status=400 if refused else 200)


def edit_form(request, post, values, refused, button='Save'):
    """The form editing ``post``: it carries the version it was opened on
    (``serial``) and the digest of what it showed (``base``)."""
    return '''<form method="post" action="%s" class="post-form" novalidate>
          %s<input type="hidden" id="serial" name="serial" value="%s">
          <input type="hidden" id="base" name="base" value="%s">
          <p class="meta">by %s</p>
          %s
          %s
          %s
          <p><button>%s</button></p></form>''' % (
        request.route_url('edit', id=post_id(post)), refusal_list(refused),
        e(values.get('serial', '')), e(values.get('base', '')),
        e(post.author.name),
        field('title', 'Title', values, refused),
        field('body', 'Text', values, refused, rows=12,
              hint='a blank line starts a paragraph'),
        field('tags', 'Tags', values, refused,
              hint='separated by spaces or commas'), e(button))


def page(request, title, body, status=200):
    """A page of the blog: its header, ``title`` and ``body`` (HTML)."""
    name = request.blog.title if request.blog is not None else 'Blog'
    return Response(
        '''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%s</title><link rel="stylesheet" href="%s"></head>
<body><header class="site"><a class="brand" href="%s">%s</a><nav>
<a href="%s">Posts</a> <a href="%s">Write a post</a> <a href="%s">Authors</a>
</nav></header>
<main><h1>%s</h1>%s</main>
<footer>Kept in MongoDB by mongopersist: plain documents,
transactions, conflicts detected.</footer>
</body></html>''' % (
            e(title), request.route_url('style'), request.route_url('posts'),
            e(name), request.route_url('posts'), request.route_url('add'),
            request.route_url('authors'), e(title), body),
        status=status, charset='utf-8')


# -- serving -----------------------------------------------------------------
def access_log(app, logger=ACCESS_LOG):
    """``app`` logging one line per request (at INFO): client, method,
    path, status, bytes and milliseconds.  The path is quoted again, so
    that a request cannot write lines of its own into the log."""
    def logged(environ, start_response):
        started = time.perf_counter()
        status = []

        def start(line, headers, exc_info=None):
            status[:] = [line.split(' ', 1)[0]]
            return start_response(line, headers, exc_info)
        body = ()
        try:
            chunks = app(environ, start)
            try:
                body = list(chunks)
            finally:
                getattr(chunks, 'close', lambda: None)()
        except BaseException:
            status[:] = ['error']
            raise
        finally:
            log(environ, status, body, started)
        return body

    def log(environ, status, body, started):
        path = urllib.parse.quote(
            environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', ''),
            safe="/:@!$&'()*+,;=-._~", encoding='latin-1',
            errors='replace')
        if len(path) > 200:
            path = path[:200] + '...'
        logger.info('%s %s %s %s %d %.1f ms', environ.get('REMOTE_ADDR', '-'),
                    environ.get('REQUEST_METHOD', '-')[:10], path,
                    status[0] if status else '-',
                    sum(len(chunk) for chunk in body),
                    (time.perf_counter() - started) * 1000)
    return logged


def serve(argv=None):
    """Serve the application with waitress, as ``make serve`` does: the
    settings and logging of ``blogapp.ini``, another store with ``--uri``.
    Stops on Ctrl-C or SIGTERM, closing the store."""
    import waitress
    import mongopersist
    from pyramid.paster import setup_logging
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=6543)
    parser.add_argument('--uri', help='the store (mongopersist.uri), '
                        'instead of the one of blogapp.ini')
    parser.add_argument('--ini', default=INI, help='the settings file')
    args = parser.parse_args(argv)
    setup_logging(args.ini)
    found = settings(args.ini)
    if args.uri:
        found['mongopersist.uri'] = args.uri
    store = mongopersist.store_from_settings(found)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app = main(store=store, **found)
        server = waitress.create_server(app, host=args.host, port=args.port,
                                        threads=8)
        print('Serving the blog on http://%s:%s/ (Ctrl-C stops)'
              % (server.effective_host, server.effective_port), flush=True)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        store.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == '__main__':
    serve()
