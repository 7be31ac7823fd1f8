"""The optional C accelerator of mongopersist (``mongopersist._speedups``).

Everything else about the package (metadata, dependencies, extras, entry
points) is in pyproject.toml; setuptools reads this file besides it only
for the extension module, which it cannot declare there.
"""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    """Build the accelerator where a C compiler is available; where not,
    say so once and install the pure Python code, which does the same
    (``mongopersist.speedups``)."""

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


setup(
    ext_modules=[Extension('mongopersist._speedups',
                           sources=['src/mongopersist/_speedups.c'],
                           optional=True)],
    cmdclass={'build_ext': optional_build_ext},
)
