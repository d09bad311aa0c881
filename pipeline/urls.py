"""Source URLs as they may be shown: without the camera's credentials."""
from __future__ import annotations

import re

# scheme://user:password@host  or  scheme://user@host, anywhere in the text
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
# ?password=...&token=... style query parameters some cameras take
_SECRET_QUERY = re.compile(r"([?&](?:pass|password|pwd|token|key|auth|secret)[^=&]*=)[^&#]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any URL's user:password and secret query values replaced by ``***``.

    Used for every URL that reaches a log line, an event, a metric label or a page."""
    if not text:
        return text
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)
