"""aptfleet server side: the coordinator, the Flower server apps and the CLI."""
