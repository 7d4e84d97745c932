"""MkDocs hook: Sphinx cross-reference roles in docstrings read as code in the API reference.

The docstrings are written for readers of the source and use ``:class:`X``` here and there;
rendered as Markdown, the role name would show up as text (":class:X"). This drops it.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj):(<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(r"\1", html)
