"""The freeze stage's export half: a serving model with the frontend inside, as a SavedModel and as TFLite."""
