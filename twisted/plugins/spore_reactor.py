# No __init__.py beside this file or in twisted/: they would hide Twisted itself.
from twisted.application.reactors import Reactor

spore = Reactor("spore", "spore.reactor", "epoll, with less work per event (Linux; what 'spore' runs on)")
