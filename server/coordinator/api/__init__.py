"""REST API of the coordinator."""
