"""What the routes do: the read path over the online store and the landing-zone writer."""
