//! A listing of one role read page by page, so memory holds one page of
//! each side whatever the number of objects.

use envsync_plugin_sdk::Error;
use envsync_plugin_sdk::objects::{self, ObjectInfo};
use std::collections::VecDeque;

pub struct Listing {
    role: &'static str,
    page: VecDeque<ObjectInfo>,
    continuation: Option<String>,
    done: bool,
    last: Option<String>,
}

impl Listing {
    pub fn new(role: &'static str) -> Self {
        Listing {
            role,
            page: VecDeque::new(),
            continuation: None,
            done: false,
            last: None,
        }
    }

    fn fill(&mut self) -> Result<(), Error> {
        while self.page.is_empty() && !self.done {
            let page = objects::list(self.role, "", self.continuation.as_deref())?;
            self.done = page.continuation.is_none();
            self.continuation = page.continuation;
            self.page.extend(page.objects);
        }
        Ok(())
    }

    /// The next object, without taking it.
    pub fn peek(&mut self) -> Result<Option<&ObjectInfo>, Error> {
        self.fill()?;
        Ok(self.page.front())
    }

    /// Takes the next object. The merge with the other side relies on
    /// S3's order (keys ascending by their UTF-8 bytes); a server listing
    /// otherwise is refused rather than have objects deleted by mistake.
    pub fn take(&mut self) -> Result<Option<ObjectInfo>, Error> {
        self.fill()?;
        let next = self.page.pop_front();
        if let Some(o) = &next {
            if self.last.as_deref().is_some_and(|l| l >= o.key.as_str()) {
                return Err(Error::Other(format!(
                    "the {} location listed {:?} after {:?}: keys are not in ascending order, so \
                     an incremental copy cannot compare the two sides; nothing more was changed",
                    self.role,
                    o.key,
                    self.last.as_deref().unwrap_or_default()
                )));
            }
            self.last = Some(o.key.clone());
        }
        Ok(next)
    }
}
