"""carme.daemon: the privileged service that carries out the Carme portal's spooled requests."""
