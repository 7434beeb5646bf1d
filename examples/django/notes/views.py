import json
import os

from django.http import JsonResponse
from django.views import View

from notes.models import Note

NOTES: list[str] = []  # kept across patches, lost on a restart


def index(request):
    return JsonResponse({"message": f"{len(NOTES)} notes", "pid": os.getpid()})


class NotesView(View):
    def get(self, request):
        return JsonResponse({"notes": [Note(text=t).short() for t in NOTES]})

    def post(self, request):
        NOTES.append(json.loads(request.body)["text"])
        return JsonResponse({"count": len(NOTES)})
