"""The trackopens feature: a 1x1 image from our tracker at the end of the body.

The pixel goes just before the last ``</body>`` end tag of the document (any case,
``</body >`` too); one that only appears inside a comment, a ``<script>`` or a
``<style>`` does not count. Without one, the pixel is appended at the end (a
browser puts trailing content in the body anyway). As with trackclicks, the
document is scanned, not re-serialised: only the pixel is added.
"""

from __future__ import annotations

import html as htmllib

from smtpeter.features.trackclicks import markup_tokens

__all__ = ["add_pixel", "pixel_tag"]


def pixel_tag(pixel_url: str) -> str:
    """The <img> element that loads ``pixel_url``."""
    return (
        f'<img src="{htmllib.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'border="0" style="display:block;width:1px;height:1px;border:0;" />'
    )


def add_pixel(html: str, pixel_url: str) -> str:
    """Insert the tracking pixel once, before the last ``</body>``, or at the end."""
    at = len(html)
    if "</" in html:
        for token in reversed(markup_tokens(html)):
            name = token.group("end")
            if name is not None and name.lower() == "body":
                at = token.start()
                break
    return html[:at] + pixel_tag(pixel_url) + html[at:]
