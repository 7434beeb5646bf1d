from django.urls import include, path
from notes import views

urlpatterns = [
    path("", views.index),
    path("notes/", include("notes.urls")),
]
