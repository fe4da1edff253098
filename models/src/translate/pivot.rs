//! Translation through a pivot language: each leg's output is the next leg's input.

use super::{TranslateError, Translator};

/// Translators chained source → pivot → target. Quality is that of the weaker leg, and
/// latency the sum of both; it exists for pairs no single engine offers (es→pt: Apertium
/// es→en, then Bergamot en→pt).
pub struct PivotTranslator {
    /// At least two, each leg's target the next one's source ([`super::open`] checks).
    legs: Vec<Box<dyn Translator>>,
}

impl PivotTranslator {
    pub fn new(legs: Vec<Box<dyn Translator>>) -> Self {
        Self { legs }
    }

    /// The pivot languages, in order (`["en"]` for es→en→pt).
    pub fn via(&self) -> Vec<&str> {
        self.legs.iter().skip(1).map(|leg| leg.pair().0).collect()
    }
}

impl Translator for PivotTranslator {
    fn translate(&mut self, text: &str) -> Result<String, TranslateError> {
        let mut text = text.to_string();
        for leg in &mut self.legs {
            // Each leg's error already names its engine and model.
            text = leg.translate(&text)?;
        }
        Ok(text)
    }

    fn pair(&self) -> (&str, &str) {
        match (self.legs.first(), self.legs.last()) {
            (Some(first), Some(last)) => (first.pair().0, last.pair().1),
            _ => ("", ""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends its target code, so a chain shows which legs ran in which order.
    struct Tag(&'static str, &'static str);

    impl Translator for Tag {
        fn translate(&mut self, text: &str) -> Result<String, TranslateError> {
            Ok(format!("{text}>{}", self.1))
        }
        fn pair(&self) -> (&str, &str) {
            (self.0, self.1)
        }
    }

    #[test]
    fn legs_run_in_order() {
        let mut pivot =
            PivotTranslator::new(vec![Box::new(Tag("es", "en")), Box::new(Tag("en", "pt"))]);
        assert_eq!(pivot.translate("hola").unwrap(), "hola>en>pt");
        assert_eq!(pivot.pair(), ("es", "pt"));
        assert_eq!(pivot.via(), ["en"]);
    }
}
