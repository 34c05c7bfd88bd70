"""The console's and the report's UI text in Japanese and English.

Rule titles and log lines are shown as they are; only the labels of the UI
are translated. Japanese is the default when ``console.locale`` is ``ja``.
"""

from __future__ import annotations

LOCALES = ("ja", "en")

_TEXT: dict[str, tuple[str, str]] = {
    # key: (ja, en)
    "app": ("zonewatch 分析コンソール", "zonewatch analyst console"),
    "matrix": ("ゾーンマトリクス", "Zone matrix"),
    "alerts": ("アラート", "Alerts"),
    "timeline": ("エンティティ時系列", "Entity timeline"),
    "health": ("ルールの状態", "Rule health"),
    "report": ("レポート", "Report"),
    "sign_in": ("サインイン", "Sign in"),
    "sign_out": ("サインアウト", "Sign out"),
    "token": ("アクセストークン", "Access token"),
    "bad_token": ("トークンが正しくありません。", "That token is not valid."),
    "throttled": (
        "失敗が続いたため、しばらく待ってから再試行してください。",
        "Too many failed attempts: wait a minute and try again.",
    ),
    "expired": (
        "セッションの有効期限が切れました。再度サインインしてください。",
        "Your session expired: sign in again.",
    ),
    "range": ("期間", "Time range"),
    "all_time": ("全期間", "All time"),
    "last_24h": ("直近24時間", "Last 24 hours"),
    "last_7d": ("直近7日", "Last 7 days"),
    "last_30d": ("直近30日", "Last 30 days"),
    "since": ("開始", "From"),
    "until": ("終了", "Until"),
    "apply": ("適用", "Apply"),
    "clear": ("クリア", "Clear"),
    "source_zone": ("送信元ゾーン", "Source zone"),
    "dest_zone": ("宛先ゾーン", "Destination zone"),
    "matrix_help": (
        "セルの色はアラート件数、灰色の数字は許可された通信（イベントアーカイブ）の件数です。"
        "セルをクリックするとその越境のアラートを一覧します。",
        "Cell colour: alerts; grey figure: allowed traffic seen in the events archive. "
        "Click a cell to list that crossing's alerts.",
    ),
    "allowed_flow": ("許可フロー", "allowed flow"),
    "forbidden": ("禁止", "forbidden"),
    "roles": ("VDIプールとロール", "VDI pools and roles"),
    "role": ("ロール", "Role"),
    "as_source": ("送信元として → 宛先ゾーン", "as source → destination zone"),
    "as_destination": ("宛先として ← 送信元ゾーン", "as destination ← source zone"),
    "zone": ("ゾーン", "Zone"),
    "traffic": ("通信", "traffic"),
    "level": ("レベル", "Level"),
    "rule": ("ルール", "Rule"),
    "crossing": ("ゾーン越境", "Zone crossing"),
    "user": ("ユーザー", "User"),
    "device": ("端末", "Device"),
    "status": ("状態", "Status"),
    "tag": ("タグ (ATT&CK)", "Tag (ATT&CK)"),
    "time": ("時刻", "Time"),
    "first_seen": ("初回", "First seen"),
    "last_seen": ("最終", "Last seen"),
    "evidence": ("証拠", "Evidence"),
    "assignee": ("担当者", "Assignee"),
    "note": ("メモ", "Note"),
    "any": ("すべて", "any"),
    "count": ("件数", "Count"),
    "page": ("ページ", "Page"),
    "prev": ("前へ", "Previous"),
    "next": ("次へ", "Next"),
    "no_alerts": ("該当するアラートはありません。", "No alerts match."),
    "of": ("件中", "of"),
    "description": ("説明", "Description"),
    "tags": ("タグ", "Tags"),
    "rule_text": ("ルール本文", "Rule text"),
    "version": ("版", "version"),
    "group": ("グループ値", "Group values"),
    "window": ("ウィンドウ", "Window"),
    "raw_line": ("元のログ行", "Raw line"),
    "parsed": ("正規化フィールド", "Parsed fields"),
    "triage": ("対応", "Triage"),
    "history": ("対応履歴", "Triage history"),
    "no_history": ("まだ変更はありません。", "No changes yet."),
    "save": ("保存", "Save"),
    "changed_by": ("変更者", "By"),
    "from_to": ("変更", "Change"),
    "events": ("イベント", "Events"),
    "source": ("ソース", "Source"),
    "action": ("アクション", "Action"),
    "no_events": (
        "期間内にこのエンティティのイベントはありません。",
        "No events of this entity in the time range.",
    ),
    "show": ("表示", "Show"),
    "hits_per_rule": ("ルールごとのヒット数（日別）", "Hits per rule per day"),
    "never_fired": ("一度も発報していないルール", "Rules that never fired"),
    "building_block": (
        "相関ルールの構成要素（単独ではアラートを出しません）",
        "building block of a correlation (raises no alert of its own)",
    ),
    "load_errors": ("読み込みエラーのルール", "Rules with load errors"),
    "late_dropped": ("遅延・破棄イベント", "Late and dropped events"),
    "dead_letters": ("デッドレター（ソース別）", "Dead letters per source"),
    "last_lines": ("直近の行", "Last lines"),
    "none": ("なし", "none"),
    "not_available": ("取得できません", "not available"),
    "alerts_per_day": ("日別・レベル別アラート件数", "Alerts per day and level"),
    "top_rules": ("上位ルール", "Top rules"),
    "top_entities": ("上位ユーザー／端末", "Top users and devices"),
    "alert_list": ("アラート一覧", "List of alerts"),
    "report_title": ("ゾーン越境レポート", "Zone crossing report"),
    "generated": ("作成", "Generated"),
    "period": ("対象期間", "Period"),
    "total_alerts": ("アラート総数", "Alerts"),
    "open_alerts": ("未完了（新規・確認済み）", "open (new or acknowledged)"),
    "report_matrix_help": (
        "色と数字はアラート件数、灰色の数字は許可された通信（イベントアーカイブ）の件数です。",
        "Colour and figure: alerts; grey figure: allowed traffic seen in the events archive.",
    ),
    "entity": ("エンティティ", "Entity"),
    "new": ("新規", "new"),
    "acknowledged": ("確認済み", "acknowledged"),
    "closed": ("完了", "closed"),
    "false_positive": ("誤検知", "false positive"),
    "critical": ("重大", "critical"),
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
    "informational": ("情報", "informational"),
    "language": ("English", "日本語"),
    "not_found": ("見つかりません", "Not found"),
    "forbidden_request": (
        "要求を受け付けられません（CSRFトークンがないか無効です）。",
        "Request refused: missing or invalid CSRF token.",
    ),
    "times_in": ("表示タイムゾーン", "Times in"),
    "sort": ("並べ替え", "Sort"),
    "store": ("アラートストア", "Alert store"),
}


def translator(locale: str) -> Translator:
    return Translator(locale if locale in LOCALES else "ja")


class Translator:
    def __init__(self, locale: str) -> None:
        self.locale = locale
        self._index = LOCALES.index(locale)

    def __call__(self, key: str) -> str:
        pair = _TEXT.get(key)
        return pair[self._index] if pair else key

    @property
    def other(self) -> str:
        """The locale the language switch offers."""
        return LOCALES[1 - self._index]
