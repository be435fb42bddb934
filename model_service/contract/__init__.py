"""What the service shares with the pipeline and the client SDK: the model card (card.py, standard library
only) and the monitoring names and bins (monitoring.py). Nothing here imports the rest of the service."""
