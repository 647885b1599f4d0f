//! The hosted page's words, in English and Simplified Chinese.

pub struct Text {
    pub lang: &'static str,
    pub title: &'static str,
    pub test_mode: &'static str,
    pub pay_exactly: &'static str,
    pub network: &'static str,
    pub address: &'static str,
    pub copy: &'static str,
    pub copied: &'static str,
    pub qr_label: &'static str,
    pub warning: &'static str,
    pub open_wallet: &'static str,
    pub amount_in_uri: &'static str,
    pub amount_not_in_uri: &'static str,
    pub expires_in: &'static str,
    pub expires_at: &'static str,
    pub waiting: &'static str,
    pub confirming: &'static str,
    pub of: &'static str,
    pub underpaid: &'static str,
    pub still_missing: &'static str,
    pub paid: &'static str,
    pub paid_redirect: &'static str,
    pub overpaid: &'static str,
    pub expired: &'static str,
    pub checking_in_time: &'static str,
    pub blocked: &'static str,
    pub return_to_merchant: &'static str,
    pub cancel: &'static str,
    pub reference: &'static str,
    pub not_found_title: &'static str,
    pub not_found_body: &'static str,
    pub switch_language: &'static str,
    pub refresh_hint: &'static str,
}

pub const EN: Text = Text {
    lang: "en",
    title: "Payment",
    test_mode: "Test mode: no real funds",
    pay_exactly: "Send exactly",
    network: "Network",
    address: "Payment address",
    copy: "Copy",
    copied: "Copied",
    qr_label: "QR code of the payment",
    warning: "Send only this token on this network. Tokens sent on another network or of another kind cannot be recovered.",
    open_wallet: "Open in wallet",
    amount_in_uri: "The QR code and wallet link include the amount.",
    amount_not_in_uri: "The QR code holds the address only: enter the amount in your wallet.",
    expires_in: "Time left",
    expires_at: "Expires at",
    waiting: "Waiting for your payment…",
    confirming: "Payment seen, confirming",
    of: "of",
    underpaid: "Partly paid. Please send the rest to the same address.",
    still_missing: "Still missing",
    paid: "Paid. Thank you!",
    paid_redirect: "Taking you back to the shop in a few seconds.",
    overpaid: "Paid. You sent more than the amount due; the merchant has been told about the difference.",
    expired: "This payment request has expired. Do not send funds to this address.",
    checking_in_time: "Checking the chain for payments made in time…",
    blocked: "This payment could not be accepted. Please contact the merchant.",
    return_to_merchant: "Return to the shop",
    cancel: "Cancel and return to the shop",
    reference: "Order",
    not_found_title: "Payment not found",
    not_found_body: "This payment link is not valid. Please go back to the shop and start again.",
    switch_language: "中文",
    refresh_hint: "Refresh this page to see the latest status.",
};

pub const ZH: Text = Text {
    lang: "zh-CN",
    title: "付款",
    test_mode: "测试模式：不涉及真实资金",
    pay_exactly: "请准确支付",
    network: "网络",
    address: "收款地址",
    copy: "复制",
    copied: "已复制",
    qr_label: "付款二维码",
    warning: "请只在此网络上发送此代币。通过其他网络或发送其他代币将无法找回。",
    open_wallet: "在钱包中打开",
    amount_in_uri: "二维码和钱包链接已包含金额。",
    amount_not_in_uri: "二维码仅包含地址，请在钱包中输入金额。",
    expires_in: "剩余时间",
    expires_at: "过期时间",
    waiting: "等待付款…",
    confirming: "已收到付款，确认中",
    of: "/",
    underpaid: "已部分付款，请将剩余金额发送到同一地址。",
    still_missing: "仍需支付",
    paid: "付款成功，谢谢！",
    paid_redirect: "几秒后将返回商家页面。",
    overpaid: "付款成功。您支付的金额超出应付金额，商家已获知差额。",
    expired: "此付款请求已过期，请勿向此地址转账。",
    checking_in_time: "正在链上核对过期前完成的付款…",
    blocked: "此付款无法被接受，请联系商家。",
    return_to_merchant: "返回商家",
    cancel: "取消并返回商家",
    reference: "订单",
    not_found_title: "未找到付款",
    not_found_body: "此付款链接无效，请返回商家页面重新下单。",
    switch_language: "English",
    refresh_hint: "刷新页面以查看最新状态。",
};

/// `?lang=` wins; then the first supported language in `Accept-Language`; then English.
pub fn choose(query_lang: Option<&str>, accept_language: Option<&str>) -> &'static Text {
    let pick = |tag: &str| {
        let tag = tag.trim().to_ascii_lowercase();
        if tag.starts_with("zh") {
            Some(&ZH)
        } else if tag.starts_with("en") {
            Some(&EN)
        } else {
            None
        }
    };
    if let Some(t) = query_lang.and_then(pick) {
        return t;
    }
    accept_language
        .into_iter()
        .flat_map(|h| h.split(','))
        .filter_map(|part| pick(part.split(';').next().unwrap_or("")))
        .next()
        .unwrap_or(&EN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_chosen_by_query_then_header() {
        assert_eq!(choose(None, None).lang, "en");
        assert_eq!(choose(None, Some("zh-CN,zh;q=0.9,en;q=0.8")).lang, "zh-CN");
        assert_eq!(choose(None, Some("fr-FR, zh-TW;q=0.5")).lang, "zh-CN");
        assert_eq!(choose(Some("en"), Some("zh-CN")).lang, "en");
        assert_eq!(choose(Some("zh"), None).lang, "zh-CN");
        assert_eq!(choose(Some("xx"), Some("de")).lang, "en");
    }
}
