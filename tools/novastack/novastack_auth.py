"""A paste filter that stands in for keystonemiddleware's authtoken.

The stack runs without keystone.  nova-api and glance-api keep their normal
"keystone" pipelines; only the ``authtoken`` filter is replaced by this one,
which states who the caller is in the same ``X-*`` headers authtoken would
set after validating a token.  Every caller is the stack's admin in one
project: the stack listens on 127.0.0.1 only and is for tests and
demonstrations, never for a shared machine.
"""

ADMIN_PROJECT_ID = "6e6f7661737461636b61646d696e3031"
ADMIN_USER_ID = "6e6f7661737461636b75736572303031"

_IDENTITY = {
    "HTTP_X_IDENTITY_STATUS": "Confirmed",
    "HTTP_X_USER_ID": ADMIN_USER_ID,
    "HTTP_X_USER_NAME": "admin",
    "HTTP_X_USER_DOMAIN_ID": "default",
    "HTTP_X_USER_DOMAIN_NAME": "Default",
    "HTTP_X_PROJECT_ID": ADMIN_PROJECT_ID,
    "HTTP_X_PROJECT_NAME": "admin",
    "HTTP_X_PROJECT_DOMAIN_ID": "default",
    "HTTP_X_PROJECT_DOMAIN_NAME": "Default",
    "HTTP_X_TENANT_ID": ADMIN_PROJECT_ID,
    "HTTP_X_TENANT_NAME": "admin",
    "HTTP_X_ROLES": "admin,member,reader",
}
DEFAULT_TOKEN = "novastack"


class HeaderIdentity:
    """WSGI middleware: overwrite the identity headers, keep any token."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.update(_IDENTITY)
        environ.setdefault("HTTP_X_AUTH_TOKEN", DEFAULT_TOKEN)
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    return HeaderIdentity
