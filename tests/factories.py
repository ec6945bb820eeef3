import factory
from django.contrib.auth import get_user_model

from registry.findings.models import Finding, FindingAuthor


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")


class FindingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Finding
        skip_postgeneration_save = True

    title = factory.Sequence(lambda n: f"Finding {n}")
    summary = "A *finding*."
    kind = Finding.Kind.THEORY
    created_by = factory.SubFactory(UserFactory)

    @factory.post_generation
    def authors(self, create, extracted, **kwargs):
        """The creator and ``authors=[...]`` as *accepted* authors (a fixture shortcut: through the
        services, a co-author named by someone else is only invited until they accept)."""
        if create:
            for user in {u.pk: u for u in [self.created_by, *(extracted or [])]}.values():
                FindingAuthor.objects.get_or_create(
                    finding=self, user=user, defaults={"status": FindingAuthor.Status.ACCEPTED}
                )
