"""The local web page (``hygie-w2l ui``): page.py lays it out, jobs.py runs the CLI's own
commands behind it. Needs the optional extra: ``pip install 'hygie-w2l[ui]'``."""
