"""What the server keeps for its clients in its SQL database beyond keys and usage: stored responses."""
