"""Coordinator services that sit between routes and crud."""
