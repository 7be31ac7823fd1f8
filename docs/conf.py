"""Sphinx configuration of the mongopersist documentation.

Build with ``make docs`` (HTML in ``docs/_build/html``).  The build needs no
network access: there is no intersphinx and the theme is Sphinx's own.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Document the source tree even when the package is not installed.
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'src'))

project = 'mongopersist'
author = 'mongopersist developers'
copyright = 'mongopersist developers'


# The version is written once, in the package (mongopersist.__version__).
from mongopersist import __version__ as release  # noqa: E402

version = '.'.join(release.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.viewcode',
]

# Document members in source order and include __init__ parameters in the
# class description.
autodoc_member_order = 'bysource'
autoclass_content = 'both'
autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
}
# PyMongo, persistent and friends are installed; nothing needs mocking.
autodoc_mock_imports = []

exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']
master_doc = root_doc = 'index'
source_suffix = {'.rst': 'restructuredtext'}
pygments_style = 'sphinx'

# The doctests are run by pytest (see setup.cfg); Sphinx only renders them.
trim_doctest_flags = True

html_theme = 'alabaster'
html_static_path = []
html_title = 'mongopersist %s' % release
