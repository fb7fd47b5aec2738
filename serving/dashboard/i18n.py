"""The dashboard's words in English and Traditional Chinese (zh-TW), in one table.

Segment and tier names come from the snapshot (``segment_zh_tw``, ``tier_zh_tw``) and column
headers of lists from :data:`models.policy.winback.LIST_COLUMNS`, so a term has one translation
everywhere. The font subset (:mod:`crm.fonts`) is cut to the characters of this
table, the reports' strings and the labels above.
"""

from __future__ import annotations

from crm.formatting import LANGUAGES

#: Cookie that keeps the chosen language.
LANG_COOKIE = "winback_lang"

STRINGS: dict[str, tuple[str, str]] = {      # key -> (English, 繁體中文)
    "app_title": ("Winback workspace", "顧客挽回工作台"),
    "overview": ("Overview", "總覽"),
    "winback_list": ("Win-back list", "挽回名單"),
    "customer": ("Customer", "顧客"),
    "reports": ("Reports", "報表"),
    "model": ("Model", "模型"),
    "sign_in": ("Sign in", "登入"),
    "sign_out": ("Sign out", "登出"),
    "sign_in_help": ("Sign in with a viewer or admin key.", "請輸入檢視者或管理者金鑰登入。"),
    "key": ("Key", "金鑰"),
    "bad_key": ("That key cannot open the dashboard.", "此金鑰無法開啟工作台。"),
    "bad_form": ("The form expired; please try again.", "表單已過期，請重試。"),
    "too_many": ("Too many failed sign-ins from here; please wait a few minutes.", "此處登入失敗次數過多，請稍候幾分鐘再試。"),
    "language": ("Language", "語言"),
    "switch": ("中文", "English"),
    "as_of": ("Scores as of", "評分基準日"),
    "model_version": ("Model version", "模型版本"),
    "customers": ("Customers", "顧客數"),
    "active": ("Active", "活躍"),
    "at_risk": ("At risk", "有流失風險"),
    "at_risk_help": ("churn probability at least 50%", "流失機率 50% 以上"),
    "total_value_at_risk": ("Total value at risk", "風險價值總額"),
    "segment_mix": ("Segment mix", "客群分布"),
    "tier_mix": ("Tier mix", "會員等級分布"),
    "churn_distribution": ("Churn probability distribution", "流失機率分布"),
    "metrics": ("Out-of-time metrics", "跨期驗證指標"),
    "metric": ("Metric", "指標"),
    "value": ("Value", "數值"),
    "filters": ("Filters", "篩選"),
    "segment": ("Segment", "客群"),
    "tier": ("Tier", "會員等級"),
    "category": ("Category", "品類"),
    "any": ("Any", "全部"),
    "winback_from": ("Win-back from", "挽回日起"),
    "winback_to": ("Win-back to", "挽回日迄"),
    "min_value": ("Least value at risk", "最低風險價值"),
    "sort": ("Sort by", "排序"),
    "descending": ("Highest first", "由高到低"),
    "ascending": ("Lowest first", "由低到高"),
    "apply": ("Apply", "套用"),
    "matching": ("customers match", "位顧客符合"),
    "page": ("Page", "第"),
    "page_of": ("of", "頁，共"),
    "pages": ("", "頁"),
    "previous": ("Previous", "上一頁"),
    "next": ("Next", "下一頁"),
    "export_csv": ("Export CSV", "匯出 CSV"),
    "export_xlsx": ("Export XLSX", "匯出 XLSX"),
    "export_note": ("Exports hold the first {n} matching customers.", "匯出最多前 {n} 位符合的顧客。"),
    "rank": ("Rank", "排名"),
    "customer_id": ("Customer", "顧客編號"),
    "value_at_risk": ("Value at risk", "風險價值"),
    "churn_probability": ("Churn probability", "流失機率"),
    "clv_12m": ("12-month value", "未來12個月價值"),
    "winback_date": ("Win-back date", "建議挽回日"),
    "next_purchase_date": ("Next purchase", "預計下次購買日"),
    "reasons": ("Reasons", "原因"),
    "no_customers": ("No customer matches these filters.", "沒有符合條件的顧客。"),
    "unknown_customer": ("No customer with this id in the snapshot.", "快照中沒有此顧客編號。"),
    "find_customer": ("Customer id", "顧客編號"),
    "open": ("Open", "開啟"),
    "scores": ("Scores", "評分"),
    "p_alive": ("P(alive)", "仍為活躍顧客機率"),
    "p_purchase_30d": ("P(purchase in 30 days)", "30天內購買機率"),
    "p_purchase_90d": ("P(purchase in 90 days)", "90天內購買機率"),
    "expected_purchases_30d": ("Expected purchases, 30 days", "未來30天預期購買次數"),
    "expected_purchases_90d": ("Expected purchases, 90 days", "未來90天預期購買次數"),
    "p_purchase_7d": ("P(purchase in 7 days)", "7天內購買機率"),
    "next_purchase_low": ("Next purchase, earliest (10%)", "下次購買最早日（10%）"),
    "next_purchase_high": ("Next purchase, latest (90%)", "下次購買最晚日（90%）"),
    "r_score": ("R score", "R 分數"),
    "f_score": ("F score", "F 分數"),
    "m_score": ("M score", "M 分數"),
    "expected_purchases_365d": ("Expected purchases, 12 months", "未來12個月預期購買次數"),
    "expected_order_value": ("Expected order value", "預期客單價"),
    "next_purchase_interval": ("Next purchase, 80% interval", "下次購買 80% 區間"),
    "priority": ("Priority", "優先順序"),
    "rfm": ("R / F / M scores", "R / F / M 分數"),
    "timeline": ("Purchase timeline", "購買歷程"),
    "first_purchase": ("First purchase", "首次購買"),
    "last_purchase": ("Last purchase", "最近一次購買"),
    "orders": ("Orders", "訂單數"),
    "total_spend": ("Total spend", "累計消費"),
    "purchase_days": ("Purchase days", "購買天數"),
    "purchase_curve": ("Probability of the next purchase by day", "下次購買累積機率"),
    "interval_80": ("80% interval", "80% 區間"),
    "p_alive_curve": ("P(alive) if no purchase", "若未再購買的活躍機率"),
    "days_from_as_of": ("days after the as-of day", "基準日後天數"),
    "tier_status": ("Tier status", "會員等級狀態"),
    "tier_keep": ("{amount} more by {date} to keep {tier}", "{date} 前再消費 {amount} 可維持{tier}"),
    "tier_kept": ("{tier} is kept at the review on {date}", "{date} 審核時可維持{tier}"),
    "tier_next": ("{amount} more to reach {tier}", "再消費 {amount} 可升級為{tier}"),
    "replenishment": ("Replenishment due", "補貨提醒日"),
    "top_category": ("Top category", "主要品類"),
    "attributes": ("Attributes", "顧客資料"),
    "none": ("none", "無"),
    "triggers": ("Triggers fired", "已觸發的自動化事件"),
    "no_triggers": ("No trigger fired for this customer.", "此顧客尚無觸發事件。"),
    "triggers_off": ("Triggers are not configured (WINBACK_TRIGGERS_STATE).",
                     "尚未設定自動化觸發（WINBACK_TRIGGERS_STATE）。"),
    "rule": ("Rule", "規則"),
    "template": ("Template", "範本"),
    "status": ("Status", "狀態"),
    "date": ("Date", "日期"),
    "group": ("Group", "組別"),
    "reports_need_log": ("The reports read the transaction log: start the service with WINBACK_TRANSACTIONS "
                         "or WINBACK_DATASET.", "報表需要交易紀錄：請以 WINBACK_TRANSACTIONS 或 WINBACK_DATASET 啟動服務。"),
    "calibration": ("Calibration", "校準曲線"),
    "lift": ("Lift (gains)", "提升圖"),
    "feature_importance": ("Feature importance", "特徵重要性"),
    "no_plots": ("No plots were logged with this model's run.", "此模型的訓練紀錄沒有圖表。"),
    "mlflow_ui": ("Open the MLflow UI", "開啟 MLflow 介面"),
    "run": ("Run", "訓練紀錄"),
    "registered": ("Registered", "註冊時間"),
    "trained_until": ("Trained until", "訓練資料截止"),
    "not_expected": ("not expected", "預計不會購買"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "winback_now": ("Win back now", "立即挽回"),
    "bad_filter": ("Filter not understood", "無法解讀的篩選條件"),
    "health": ("Model health", "模型健康度"),
    "health_as_of": ("last monitored on", "最近監控日"),
    "health_healthy": ("Healthy", "正常"),
    "health_warning": ("Check the feed", "請檢查資料來源"),
    "health_retrain": ("Retraining advised", "建議重新訓練"),
    "health_none": ("Not monitored yet: run winback monitor --as-of YYYY-MM-DD.",
                    "尚未監控：請執行 winback monitor --as-of YYYY-MM-DD。"),
    "estimated_churn_auc": ("Estimated churn AUC (before labels)", "預估流失 AUC（標籤前）"),
    "realized_churn_auc": ("Realized churn AUC", "實際流失 AUC"),
    "backtest_churn_auc": ("Backtest churn AUC", "回測流失 AUC"),
    "auc_floor": ("Lower end of the backtest's interval", "回測區間下限"),
    "max_psi": ("Largest drift (PSI)", "最大漂移（PSI）"),
    "drifted_columns": ("Drifted columns", "漂移欄位數"),
    "unseen_share": ("Customers unseen at training", "訓練時未見的顧客"),
    "drift_over_time": ("Drift over time", "漂移趨勢"),
    "auc_over_time": ("Estimated vs realized churn AUC", "預估與實際流失 AUC"),
    "snapshot_day": ("Snapshot day", "快照日"),
    "psi_floor": ("PSI threshold 0.1", "PSI 門檻 0.1"),
    "selection": ("Served candidates", "上線模型選擇"),
    "target_churn": ("Churn", "流失"),
    "target_next_purchase": ("Next purchase", "下次購買"),
    "candidate": ("Candidate", "候選模型"),
    "served": ("Served", "上線"),
    "reason": ("Reason", "原因"),
    # the Campaigns page (issue #21)
    "campaigns": ("Campaigns", "行銷活動"),
    "campaigns_help": ("Events recorded by winback triggers run; their outcomes are the purchases in the transaction "
                       "log up to {day}. The figures are those of winback triggers report.",
                       "winback triggers run 記錄的事件；成效為交易紀錄中至 {day} 為止的購買。數字與 winback triggers "
                       "report 相同。"),
    "campaigns_need_log": ("The campaign figures read the outcomes in the transaction log: start the service with "
                           "WINBACK_TRANSACTIONS or WINBACK_DATASET.",
                           "行銷活動成效需要交易紀錄：請以 WINBACK_TRANSACTIONS 或 WINBACK_DATASET 啟動服務。"),
    "no_campaign_events": ("No trigger event recorded yet: run winback triggers run.",
                           "尚無觸發事件：請執行 winback triggers run。"),
    "budget": ("Budget and ranking", "發送預算與排序"),
    "max_sends_per_day": ("Budget: sends per day", "每日發送上限"),
    "busiest_day_sends": ("Busiest day's sends", "單日最多發送數"),
    "sent": ("Sent", "已發送"),
    "held_out": ("Held out", "對照組"),
    "skipped_budget": ("Skipped (budget)", "超出預算未發送"),
    "days": ("Days", "天數"),
    "last_day": ("Latest day", "最近一次"),
    "ranking": ("Ranking", "排序依據"),
    "why": ("Why", "原因"),
    "ranking_uplift_model": ("Uplift model", "增量模型"),
    "ranking_prior": ("Prior uplift: value at risk ranks", "先驗增量：依風險價值排序"),
    "sends_per_day": ("Sends per day", "每日發送數"),
    "day_sends": ("Sends that day (all rules) / budget", "當日發送數（全部規則）／上限"),
    "treated_vs_holdout": ("Sent vs held out", "發送組與對照組比較"),
    "lift_help": ("A purchase within the window after the event; 95% intervals (Newcombe for rates, Welch for "
                  "revenue). Only events whose window has ended are compared.",
                  "事件後觀察期內是否購買；95% 信賴區間（購買率採 Newcombe 法，營收採 Welch 法）。只比較觀察期已結束的事件。"),
    "window": ("Window", "觀察期"),
    "matured": ("Window ended", "觀察期已結束"),
    "purchase_rate_send": ("Purchase rate, sent", "發送組購買率"),
    "purchase_rate_holdout": ("Purchase rate, held out", "對照組購買率"),
    "purchase_rate_diff": ("Purchase rate difference", "購買率差異"),
    "revenue_diff": ("Revenue per customer difference", "每位顧客營收差異"),
    "days_n": ("{n} days", "{n} 天"),
    "lift_chart": ("Purchase rate, sent minus held out (95% interval)", "購買率差異：發送組減對照組（95% 區間）"),
    "uplift_per_rule": ("Uplift per rule: whom did the message change?", "各規則增量：訊息改變了誰？"),
    "uplift_help": ("Each rule's events with an ended window, ranked three ways. The Qini coefficient is 0 for a "
                    "random ranking and above 0 when the customers the message moved come first; 95% bootstrap "
                    "intervals over customers.",
                    "各規則觀察期已結束的事件，以三種方式排序。Qini 係數在隨機排序時為 0，訊息真正打動的顧客排在前面時大於 "
                    "0；以顧客為單位的自助法 95% 區間。"),
    "uplift": ("Uplift", "增量"),
    "recorded_uplift": ("Recorded ranking (uplift model or prior)", "實際排序（增量模型或先驗）"),
    "churn_risk": ("Churn risk", "流失風險"),
    "no_matured": ("No rule has sent and held-out events whose window has ended yet.",
                   "尚無規則同時有觀察期已結束的發送組與對照組事件。"),
    "qini_curve_of": ("Qini curve: {rule}", "Qini 曲線：{rule}"),
    "share_targeted": ("share of events targeted", "發送對象比例"),
    "incremental_per_event": ("incremental purchasers per event", "每事件增量購買人數"),
    "random_ranking": ("Random ranking", "隨機排序"),
}


def translator(lang: str):
    """``t(key, **fields)``: the string in ``lang``, with ``{fields}`` filled in."""
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    column = LANGUAGES.index(lang)

    def t(key: str, **fields) -> str:
        text = STRINGS[key][column]
        return text.format(**fields) if fields else text

    return t


def pick_language(cookie: str | None, accept_language: str | None = None) -> str:
    """The cookie's language if valid, else zh-TW when the browser asks for Chinese, else English."""
    if cookie in LANGUAGES:
        return cookie
    if accept_language and accept_language.lower().lstrip().startswith("zh"):
        return "zh-TW"
    return "en"
