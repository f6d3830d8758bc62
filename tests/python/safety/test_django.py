"""Django ORM (mysql backend over mysqlclient, configured in-process): the
F() + refresh_from_db() + save() idiom on a select_for_update() row.

    u = User.objects.select_for_update().get(id=1)
    u.frozen_balance = F("frozen_balance") + 50
    u.save(update_fields=["frozen_balance"])   # relative write
    u.refresh_from_db()                        # plain keyed re-read
    u.save()                                   # every column, absolute

The plain re-read tells thaw what the app now believes, so the final save()
is checkable. It must succeed (not be refused with 1213 on every retry)."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from safety.harness import LOCK_WAIT_TIMEOUT, Env, check, other_freeze, run_with_retry, std_books, std_setup

CHANGE = pytest.mark.parametrize("change", [False, True], ids=["no_change", "concurrent_change"])

_MODELS = {}


def django_models():
    """Configure Django once per process (no project files) and define the models."""
    if _MODELS:
        return _MODELS
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={}, INSTALLED_APPS=[], USE_TZ=False, DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")
        django.setup()
    from django.db import models

    class DjUser(models.Model):
        id = models.BigIntegerField(primary_key=True)
        username = models.CharField(max_length=64, null=True)
        balance = models.BigIntegerField()
        frozen_balance = models.BigIntegerField()
        updated_at = models.DateTimeField(null=True)

        class Meta:
            app_label = "thaw_safety"
            db_table = "users"
            managed = False

    class DjFreezeLog(models.Model):
        request_id = models.CharField(max_length=64, primary_key=True)
        user_id = models.BigIntegerField()
        amount = models.BigIntegerField()

        class Meta:
            app_label = "thaw_safety"
            db_table = "freeze_logs"
            managed = False

    _MODELS.update(User=DjUser, FreezeLog=DjFreezeLog)
    return _MODELS


class django_alias:
    """A Django database alias for env's endpoint and database, removed on exit."""

    def __init__(self, env: Env):
        self.env = env
        self.alias = "thaw_" + uuid.uuid4().hex[:8]

    def __enter__(self) -> str:
        from django.db import connections

        cfg = {"ENGINE": "django.db.backends.mysql", "NAME": self.env.db, "USER": "root", "PASSWORD": "",
               "HOST": self.env.endpoint.host, "PORT": str(self.env.endpoint.port),
               "OPTIONS": {"init_command": f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT}"}}
        filled = connections.configure_settings({"default": {}, self.alias: cfg})[self.alias]
        connections.settings[self.alias] = filled
        return self.alias

    def __exit__(self, *exc) -> None:
        from django.db import connections

        try:
            connections[self.alias].close()
        finally:
            try:
                del connections[self.alias]
            except AttributeError:
                pass
            connections.settings.pop(self.alias, None)


@CHANGE
def test_django_f_expression_refresh_from_db_save_on_select_for_update(via, subject, direct, change):
    M = django_models()
    from django.db import transaction
    from django.db.models import F

    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        rec = env.recorder("app")
        with django_alias(env) as alias:
            def txn():
                with transaction.atomic(using=alias):
                    u = M["User"].objects.using(alias).select_for_update().get(id=1)
                    rec.note("read", (u.username, u.balance, u.frozen_balance))
                    if other is not None:
                        other.fire()
                    M["FreezeLog"].objects.using(alias).create(request_id="app-1", user_id=1, amount=50)
                    u.frozen_balance = F("frozen_balance") + 50
                    u.save(update_fields=["frozen_balance"])
                    u.refresh_from_db()
                    rec.note("refreshed", (u.username, u.balance, u.frozen_balance))
                    u.updated_at = dt.datetime(2024, 5, 1)
                    u.save()
                return "frozen"
            res = run_with_retry(txn, rec=rec)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books)


