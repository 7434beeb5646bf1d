from django.db import models


class Note(models.Model):
    """A note as the database would keep it (this example keeps its notes in memory)."""

    text = models.CharField(max_length=200)

    def short(self):
        return self.text[:20]
