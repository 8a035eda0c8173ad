"""End-to-end tests of ``twoway serve chat``: a real server process, real sockets, nc, telnet."""
