"""The emperor's live control plane: a pyzmq ROUTER for commands and a PUB for events.

``protocol`` is the wire format (envelope, error numbers, endpoints), ``commands`` the one
registry of commands, ``server`` the sockets inside the emperor's loop, ``client`` and
``cli`` the ``emperor ctl`` side. Vassals and workers never import this package.
"""
