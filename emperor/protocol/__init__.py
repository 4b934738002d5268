"""Sans-IO protocol code: the uwsgi packet codec and the WSGI pieces. No sockets here."""
