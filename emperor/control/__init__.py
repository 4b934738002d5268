"""The emperor's live control plane: a pyzmq ROUTER for commands and a PUB for events.

``protocol`` is the wire format (envelope, error numbers, endpoints), ``api`` what a command
may ask of the emperor (``EmperorAPI``, implemented by ``emperor/empire/operator.py``),
``commands`` the one registry of commands, ``server`` the sockets inside the emperor's loop,
``client`` and ``cli`` the ``emperor ctl`` side. This package imports nothing of ``empire``
or ``vassal`` (tests/test_architecture.py); vassals and workers never import it.
"""
