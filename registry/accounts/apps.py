from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "registry.accounts"
    label = "accounts"
    verbose_name = "Accounts and API tokens"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from registry.accounts import schema  # noqa: F401  (registers the OpenAPI security scheme)
        from registry.accounts.signup import settle_signup_on_activation

        post_save.connect(settle_signup_on_activation, sender=get_user_model(),
                          dispatch_uid="accounts.settle_signup_on_activation")
