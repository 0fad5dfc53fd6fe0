# No __init__.py beside this file or in twisted/: they would hide Twisted itself.
from twisted.application.service import ServiceMaker

spore_server = ServiceMaker(
    "Spore tunnel server", "spore.server_tap", "A bore-compatible TCP tunnel server.", "spore-server"
)
spore_local = ServiceMaker(
    "Spore tunnel client", "spore.local_tap", "Expose a local port through a Spore or bore server.", "spore-local"
)
