"""``multinet serve``'s web page: the networks it answers with (``answers``), what the
browser runs itself (``browser``), and the server (``server``); the page's own files are
in ``static/``."""
