"""The touchscreen pages: ``mount_ui(app, appliance)`` adds them and ``/static`` to the API app.

Pages are server-rendered Jinja2 shells (layout, navigation, words in the chosen language);
their data comes from the appliance's JSON API and event WebSocket through a little plain
JavaScript in ``static/``. Nothing here touches the store. Every asset is served from this
package (no CDN): the appliance must work with no network.
"""

from __future__ import annotations

from edge.ui.pages import mount_ui

__all__ = ["mount_ui"]
