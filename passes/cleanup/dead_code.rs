//! `dead-code`: removes operators and initializers that no graph output depends on.

use crate::ir::Graph;
use crate::pass::{Context, Outcome, Pass};

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }
    fn about(&self) -> &'static str {
        "remove nodes and initializers no output depends on"
    }
    fn run(&self, g: &mut Graph, _cx: &Context) -> Result<Outcome, String> {
        let ops = g.num_ops();
        let removed = g.remove_dead();
        let ops_gone = ops - g.num_ops();
        Ok(Outcome::changed(if removed > 0 {
            vec![format!(
                "removed {ops_gone} dead nodes and {} unused initializers",
                removed - ops_gone
            )]
        } else {
            vec![]
        }))
    }
}
