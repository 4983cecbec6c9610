"""The Flower server side: ServerApp, strategy, round records, simulation and fleet."""
