"""The README's quick start runs as shown."""
import contextlib
import io
import os
import re

import pytest

import mongopersist

README = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')


def quick_start():
    with open(README, encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('## Quick start'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_quick_start_runs_and_prints_what_it_says():
    code = quick_start()
    assert 'testing' not in code        # an application's way, not a test's
    out = io.StringIO()
    with pytest.warns(mongopersist.InMemoryStoreWarning,
                      match='memory only'):
        with contextlib.redirect_stdout(out):
            exec(compile(code, README, 'exec'), {'__name__': 'quickstart'})
    printed = out.getvalue()
    shown = ' '.join(line.lstrip('# ') for line in code.splitlines()
                     if line.startswith('# {') or line.startswith('#  '))
    pattern = re.escape(shown).replace(r"'\.\.\.'", "'[0-9a-f]{24}'")
    assert re.fullmatch(pattern, printed.strip()), (shown, printed)
