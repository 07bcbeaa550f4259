"""What the tests drive the system with, one module per concern (imported by path, e.g.
``from tests.kits.world import World``):

- ``world``: real ``wedsync api`` processes, weddings and members over HTTP, raw WebSocket frames;
- ``statekit``: wedding state through change frames, folded as a client folds it, and ``/state``;
- ``notifykit``: the notifications worker's parts in the test process, with an injected clock;
- ``providers``: local SMTP, SMS, webhook and Web Push servers standing in for the providers;
- ``otlp``: an in-memory OTLP/HTTP receiver for the spans the processes export.
"""
