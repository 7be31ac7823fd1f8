"""Packaging for mongopersist."""
import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    """Build the accelerator (``mongopersist._speedups``, C) where a C
    compiler is available; where not, say so once and install the pure
    Python code, which does the same (``mongopersist.speedups``)."""

    warned = False

    def run(self):
        try:
            super().run()
        except Exception as error:      # no compiler, no headers, ...
            self._warn(error)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:
            self._warn(error)

    def _warn(self, error):
        if not optional_build_ext.warned:
            optional_build_ext.warned = True
            sys.stderr.write(
                'WARNING: mongopersist\'s C accelerator was not built (%s); '
                'mongopersist runs as pure Python, correct but slower.\n'
                % (str(error).strip() or type(error).__name__))


# The accelerator; optional (see optional_build_ext).
SPEEDUPS = Extension('mongopersist._speedups',
                     sources=['src/mongopersist/_speedups.c'],
                     optional=True)


def read(*parts):
    with open(os.path.join(os.path.dirname(__file__), *parts),
              encoding='utf-8') as f:
        return f.read()


TESTS_REQUIRE = [
    'pytest',
    'mongomock >= 4.3',
    'mockupdb >= 1.8',
    # Model-based (stateful) tests of the data manager.
    'hypothesis >= 6.0',
    # The command line's progress bar (tests check it stays off when the
    # output is not a terminal).
    'tqdm >= 4.60',
]

# The Pyramid layer (mongopersist.pyramid), the example web application and
# the HTTP server it is served with (make serve, the load test).
PYRAMID_REQUIRE = [
    'pyramid >= 2.0',
    'pyramid_tm >= 2.4',
    'pyramid_retry >= 2.1',
    'waitress',
]

setup(
    name='mongopersist',
    version='0.1.0.dev0',
    author='mongopersist developers',
    description='Transactional storage of persistent Python objects '
                'as plain MongoDB documents',
    long_description=read('README.md') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/markdown',
    license='ZPL 2.1',
    keywords='mongodb persistent transaction zodb orm odm',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Intended Audience :: Developers',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: Database',
    ],
    python_requires='>=3.10',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    include_package_data=True,
    zip_safe=False,
    ext_modules=[SPEEDUPS],
    cmdclass={'build_ext': optional_build_ext},
    install_requires=[
        'pymongo >= 4.0, < 5',
        'persistent >= 4.9',
        'transaction >= 3.0',
        'zope.interface',
    ],
    entry_points={
        'console_scripts': ['mongopersist = mongopersist.cli:main_exit'],
    },
    extras_require={
        'test': TESTS_REQUIRE + PYRAMID_REQUIRE + ['webtest'],
        'pyramid': PYRAMID_REQUIRE,
        'embedded': ['mongomock >= 4.3'],
        # The progress bar of the ``mongopersist`` command (optional: the
        # command works without it).
        'cli': ['tqdm >= 4.60'],
        'bench': ['mongoengine', 'ZODB', 'matplotlib'],
        'docs': ['sphinx'],
        # Container events and locations (mongopersist.events,
        # mongopersist.container): zope.container's event and location types.
        'zope': ['zope.event', 'zope.lifecycleevent', 'zope.location',
                 'zope.component'],
        # file:// stores (mongopersist.fileserver): SecantusDB, a MongoDB
        # wire-protocol server over WiredTiger, run in a process of its own
        # (GPL-2.0-only: never imported by mongopersist).  Pinned: a beta
        # whose options and on-disk layout may still change.
        'server': ['secantusdb == 0.7.0b3'],
    },
)
