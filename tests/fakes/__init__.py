"""Local stand-ins for services that cannot be reached from here (Modal), built honestly:
real sockets, real Docker containers behind a real client SDK."""
