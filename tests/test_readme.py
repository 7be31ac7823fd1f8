"""The README's quick start runs as shown."""
import contextlib
import importlib.util
import io
import os
import re
import warnings

import pytest

from mongopersist import fileserver

README = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')


def quick_start():
    with open(README, encoding='utf-8') as f:
        text = f.read()
    section = text[text.index('## Quick start'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


@pytest.mark.skipif(
    importlib.util.find_spec(fileserver.SERVER_MODULE) is None,
    reason="the quick start stores in a directory: SecantusDB is not "
           "installed (pip install 'mongopersist[server]')")
def test_the_quick_start_runs_and_prints_what_it_says(tmp_path, monkeypatch):
    code = quick_start()
    assert 'testing' not in code        # an application's way, not a test's
    assert "connect('file://quickstart-data'" in code
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fileserver, 'LINGER', 0.0)
    out = io.StringIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')      # no warning on the way
            with contextlib.redirect_stdout(out):
                exec(compile(code, README, 'exec'),
                     {'__name__': 'quickstart'})
    finally:
        fileserver.stop(str(tmp_path / 'quickstart-data'))
    printed = out.getvalue()
    shown = ' '.join(line.lstrip('# ') for line in code.splitlines()
                     if line.startswith('# {') or line.startswith('#  '))
    pattern = re.escape(shown).replace(r"'\.\.\.'", "'[0-9a-f]{24}'")
    assert re.fullmatch(pattern, printed.strip()), (shown, printed)
