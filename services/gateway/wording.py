"""Plain-Russian explanations of what went wrong, for the salon admin (never raw error text)."""

from __future__ import annotations

import re

_STATUS_IN_TEXT = re.compile(r"\b([45][0-9]{2})\b")

_BY_STATUS: dict[int, str] = {
    400: (
        "YClients не нашёл наше приложение для этого филиала (ошибка настройки на стороне платформы). "
        "Мы уже знаем о ней; попробуйте повторить активацию через несколько минут."
    ),
    401: (
        "YClients не принял ключ партнёра — это ошибка настройки на нашей стороне, мы уже получили сигнал. "
        "Когда исправим, нажмите «Повторить активацию»."
    ),
    403: (
        "YClients не дал доступа к приложению для этого филиала. Проверьте в YClients, что приложение "
        "подключено именно для него, и повторите активацию."
    ),
    422: (
        "YClients отклонил данные активации. Нажмите «Повторить активацию»; если ошибка повторится, "
        "переподключите приложение из маркетплейса YClients."
    ),
}
_UNAVAILABLE = (
    "YClients сейчас не отвечает — мы несколько раз пробовали активировать интеграцию. "
    "Нажмите «Повторить активацию» через пару минут."
)


def activation_error_text(status_code: int | None, reason: str | None) -> str:
    """What the admin reads when activation failed, chosen by the YClients status code (or one found in `reason`)."""
    code = status_code
    if code is None and reason:
        found = _STATUS_IN_TEXT.search(reason)
        code = int(found.group(1)) if found else None
    if code is not None and code in _BY_STATUS:
        return _BY_STATUS[code]
    return _UNAVAILABLE
