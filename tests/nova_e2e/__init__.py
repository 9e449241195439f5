"""End-to-end tests through a real OpenStack (tools/novastack) and the real lab."""
