"""The platform's built-in templates: one text per event key and language, published at start-up
as version 1 for every channel where no template of that event, channel and language exists yet.
Operators replace them through the template methods (a new draft, then publish)."""

from __future__ import annotations

from dataclasses import dataclass

from svc.notification.domain import Category, Channel


@dataclass(frozen=True)
class Text:
    subject: str
    body: str
    action_link: str = ""


@dataclass(frozen=True)
class Builtin:
    category: Category
    channels: tuple[Channel, ...]
    texts: dict[str, Text]


ALL_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.IN_APP)
WITHDRAWAL_LINK = "finmesh://withdrawals/{{withdrawal_id}}"

BUILTINS: dict[str, Builtin] = {
    "user.registered": Builtin(
        Category.ACCOUNT,
        (Channel.EMAIL, Channel.IN_APP),
        {
            "en": Text(
                "Welcome to finmesh",
                "Your finmesh account is ready. Verify your identity to unlock withdrawals.",
            ),
            "de": Text(
                "Willkommen bei finmesh",
                "Ihr finmesh-Konto ist bereit. Verifizieren Sie sich, um Auszahlungen freizuschalten.",
            ),
        },
    ),
    "auth.new_login": Builtin(
        Category.SECURITY,
        ALL_CHANNELS,
        {
            "en": Text(
                "New sign-in to your account",
                "We noticed a sign-in from {{device}} at {{ip}} ({{location}}). If this was not you, "
                "change your password and contact support.",
                "finmesh://security/sessions",
            ),
            "de": Text(
                "Neue Anmeldung bei Ihrem Konto",
                "Wir haben eine Anmeldung von {{device}} unter {{ip}} ({{location}}) bemerkt. Waren Sie das "
                "nicht, ändern Sie Ihr Passwort und wenden Sie sich an den Support.",
                "finmesh://security/sessions",
            ),
        },
    ),
    "user.contact_change_requested": Builtin(
        Category.SECURITY,
        (Channel.EMAIL, Channel.SMS, Channel.IN_APP),
        {
            "en": Text(
                "Your finmesh contact details are being changed",
                "Someone asked to change the {{channel}} of your finmesh account. The new one takes "
                "effect once verified. If this was not you, contact support now and change your "
                "password.",
                "finmesh://security",
            ),
            "de": Text(
                "Ihre finmesh-Kontaktdaten werden geändert",
                "Es wurde beantragt, die {{channel}} Ihres finmesh-Kontos zu ändern. Die neue gilt, "
                "sobald sie bestätigt ist. Waren Sie das nicht, wenden Sie sich sofort an den Support "
                "und ändern Sie Ihr Passwort.",
                "finmesh://security",
            ),
        },
    ),
    "auth.password_reset": Builtin(
        Category.SECURITY,
        (Channel.EMAIL, Channel.SMS),
        {
            "en": Text(
                "Reset your finmesh password",
                "Your password reset code is {{code}}. It is valid for 30 minutes and works once. If you "
                "did not ask for it, ignore this message: your password stays as it is.",
            ),
            "de": Text(
                "Ihr finmesh-Passwort zurücksetzen",
                "Ihr Code zum Zurücksetzen des Passworts lautet {{code}}. Er gilt 30 Minuten und nur "
                "einmal. Haben Sie ihn nicht angefordert, ignorieren Sie diese Nachricht.",
            ),
        },
    ),
    "user.verify_email": Builtin(
        Category.SECURITY,
        (Channel.EMAIL,),
        {
            "en": Text("Your finmesh verification code", "Your verification code is {{code}}."),
            "de": Text("Ihr finmesh-Bestätigungscode", "Ihr Bestätigungscode lautet {{code}}."),
        },
    ),
    "user.verify_phone": Builtin(
        Category.SECURITY,
        (Channel.SMS,),
        {
            "en": Text("finmesh code", "Your finmesh verification code is {{code}}."),
            "de": Text("finmesh-Code", "Ihr finmesh-Bestätigungscode lautet {{code}}."),
        },
    ),
    "deposit.credited": Builtin(
        Category.TRANSACTIONS,
        (Channel.EMAIL, Channel.PUSH, Channel.IN_APP),
        {
            "en": Text(
                "Deposit credited",
                "{{amount}} {{asset}} were credited to your account (transaction {{tx_hash}}).",
                "finmesh://deposits/{{deposit_id}}",
            ),
            "de": Text(
                "Einzahlung gutgeschrieben",
                "{{amount}} {{asset}} wurden Ihrem Konto gutgeschrieben (Transaktion {{tx_hash}}).",
                "finmesh://deposits/{{deposit_id}}",
            ),
        },
    ),
    "withdrawal.requested": Builtin(
        Category.TRANSACTIONS,
        (Channel.EMAIL, Channel.PUSH, Channel.IN_APP),
        {
            "en": Text(
                "Withdrawal requested",
                "Your withdrawal of {{amount}} {{asset}} to {{destination}} was requested.",
                WITHDRAWAL_LINK,
            ),
            "de": Text(
                "Auszahlung beantragt",
                "Ihre Auszahlung von {{amount}} {{asset}} an {{destination}} wurde beantragt.",
                WITHDRAWAL_LINK,
            ),
        },
    ),
    "withdrawal.confirmed": Builtin(
        Category.TRANSACTIONS,
        (Channel.EMAIL, Channel.PUSH, Channel.IN_APP),
        {
            "en": Text(
                "Withdrawal completed",
                "Your withdrawal of {{amount}} {{asset}} to {{destination}} is "
                "confirmed on chain (transaction {{tx_hash}}).",
                WITHDRAWAL_LINK,
            ),
            "de": Text(
                "Auszahlung abgeschlossen",
                "Ihre Auszahlung von {{amount}} {{asset}} an {{destination}} ist "
                "bestätigt (Transaktion {{tx_hash}}).",
                WITHDRAWAL_LINK,
            ),
        },
    ),
    "withdrawal.rejected": Builtin(
        Category.TRANSACTIONS,
        (Channel.EMAIL, Channel.PUSH, Channel.IN_APP),
        {
            "en": Text(
                "Withdrawal not executed",
                "Your withdrawal of {{amount}} {{asset}} was not executed; the funds are available again.",
                WITHDRAWAL_LINK,
            ),
            "de": Text(
                "Auszahlung nicht ausgeführt",
                "Ihre Auszahlung von {{amount}} {{asset}} wurde nicht ausgeführt; das "
                "Guthaben ist wieder verfügbar.",
                WITHDRAWAL_LINK,
            ),
        },
    ),
    "withdrawal.cancelled": Builtin(
        Category.TRANSACTIONS,
        (Channel.EMAIL, Channel.PUSH, Channel.IN_APP),
        {
            "en": Text(
                "Withdrawal cancelled",
                "Your withdrawal of {{amount}} {{asset}} was cancelled.",
                WITHDRAWAL_LINK,
            ),
            "de": Text(
                "Auszahlung storniert",
                "Ihre Auszahlung von {{amount}} {{asset}} wurde storniert.",
                WITHDRAWAL_LINK,
            ),
        },
    ),
    "withdrawal.failed": Builtin(
        Category.TRANSACTIONS,
        (Channel.EMAIL, Channel.PUSH, Channel.IN_APP),
        {
            "en": Text(
                "Withdrawal failed",
                "Your withdrawal of {{amount}} {{asset}} failed; the funds are available again.",
                WITHDRAWAL_LINK,
            ),
            "de": Text(
                "Auszahlung fehlgeschlagen",
                "Ihre Auszahlung von {{amount}} {{asset}} ist fehlgeschlagen; das "
                "Guthaben ist wieder verfügbar.",
                WITHDRAWAL_LINK,
            ),
        },
    ),
    "kyc.approved": Builtin(
        Category.VERIFICATION,
        (Channel.EMAIL, Channel.IN_APP),
        {
            "en": Text(
                "Verification approved",
                "Your identity verification is approved: your account is now at level {{level}}.",
                "finmesh://kyc",
            ),
            "de": Text(
                "Verifizierung bestätigt",
                "Ihre Identitätsprüfung ist bestätigt: Ihr Konto hat jetzt Stufe {{level}}.",
                "finmesh://kyc",
            ),
        },
    ),
    "kyc.rejected": Builtin(
        Category.VERIFICATION,
        (Channel.EMAIL, Channel.IN_APP),
        {
            "en": Text(
                "Verification not approved",
                "We could not approve your identity verification. You can apply again.",
                "finmesh://kyc",
            ),
            "de": Text(
                "Verifizierung nicht bestätigt",
                "Wir konnten Ihre Identitätsprüfung nicht bestätigen. Sie können es erneut versuchen.",
                "finmesh://kyc",
            ),
        },
    ),
    "kyc.information_requested": Builtin(
        Category.VERIFICATION,
        (Channel.EMAIL, Channel.IN_APP),
        {
            "en": Text(
                "More information needed",
                "We need more information to complete your verification.",
                "finmesh://kyc",
            ),
            "de": Text(
                "Weitere Angaben nötig",
                "Wir benötigen weitere Angaben, um Ihre Verifizierung abzuschließen.",
                "finmesh://kyc",
            ),
        },
    ),
}
