"""The project's one URLconf: JSON views, a request-body echo, a streamed response and a
blocking sync view."""

from django.urls import path

from djangoproj import views

urlpatterns = [
    path("hello/", views.hello, name="hello"),
    path("items/<int:item_id>/", views.item, name="item"),
    path("echo/", views.echo, name="echo"),
    path("stream/", views.stream, name="stream"),
    path("sync-sleep/", views.sync_sleep, name="sync-sleep"),
]
