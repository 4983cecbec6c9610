"""aptfleet coordinator: FastAPI service, storage and Flower ServerApp."""
