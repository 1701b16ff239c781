// Error page (404 / 422): the server wrote the sentence and the link back; nothing to load.
