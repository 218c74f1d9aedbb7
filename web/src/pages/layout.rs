//! The page frame and form helpers (maud templates: every `(value)` is escaped).

use maud::{DOCTYPE, Markup, html};

/// A whole page: `title`, then `content` in `<main>`.
pub(crate) fn page(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · BlueWave" }
            }
            body {
                header { p { a href="/account" { "BlueWave" } } }
                main { h1 { (title) } (content) }
            }
        }
    }
}

/// The hidden synchronizer-token field of a form.
pub(crate) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A one-button `POST` form carrying the token and `fields` (name, value) as hidden inputs.
pub(crate) fn button_form(action: &str, label: &str, token: &str, fields: &[(&str, &str)]) -> Markup {
    html! {
        form method="post" action=(action) {
            (csrf_field(token))
            @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
            button type="submit" { (label) }
        }
    }
}

/// A notice paragraph (errors and confirmations).
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! { @if let Some(text) = text { p role="alert" { (text) } } }
}
