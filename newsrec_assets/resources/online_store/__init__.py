"""The online store: the list store and the article cache (ports and records in `base`), each with
a SQLite adapter (`sqlite`, embedded) and a Redis one (`redis`, networked)."""
