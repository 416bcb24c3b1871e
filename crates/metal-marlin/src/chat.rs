//! `metal-marlin chat`: a conversation, one user message per line of standard input, each reply
//! streamed to standard output.
//!
//! The KV cache is kept between turns (`marlin_engine::Session`): each turn renders the whole
//! history with the chat template, and only the tokens after the part already cached are
//! prefilled. Standard output carries only the replies; the banner, the prompt marker, notes
//! and speeds go to standard error, and the banner and marker only on a terminal, so piped use
//! stays clean.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Args;
use marlin_engine::chat::Message;
use marlin_engine::generate::FinishReason;
use marlin_engine::{Completion, Engine, EngineError, Session, TextParams};

use crate::model_source::ModelArgs;
use crate::sampling::SamplingArgs;

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A system message opening the conversation (kept across /reset).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

const HELP: &str = "/reset clears the conversation, /exit (or end of input) ends it";

/// What a line of input asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Blank,
    Exit,
    Reset,
    /// `/help`, or a word starting with `/` that is no command.
    Help,
    Message(&'a str),
}

fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim();
    match line {
        "" => Line::Blank,
        "/exit" | "/quit" => Line::Exit,
        "/reset" => Line::Reset,
        // One word starting with `/` is a mistyped command, not worth a reply; a sentence that
        // starts with a slash is a message.
        _ if line.starts_with('/') && !line.contains(char::is_whitespace) => Line::Help,
        _ => Line::Message(line),
    }
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let engine = args.model.load()?;
    if engine.chat_template().is_none() {
        bail!(
            "{}: the model has no chat template, so it cannot hold a conversation; use \
             `metal-marlin generate` to complete plain text",
            args.model.describe()
        );
    }
    let mut chat = Chat {
        engine: &engine,
        session: engine.session()?,
        system: args.system.map(Message::system),
        history: Vec::new(),
        params: args.sampling.text_params(),
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "metal-marlin chat: {} (context {} tokens)\n{HELP}.",
            args.model.describe(),
            chat.session.context_len()
        );
    }
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        match parse_line(&line) {
            Line::Blank => {}
            Line::Exit => break,
            Line::Reset => {
                chat.reset();
                eprintln!("(conversation cleared)");
            }
            Line::Help => eprintln!("({HELP})"),
            Line::Message(text) => chat.turn(text)?,
        }
    }
    if interactive {
        eprintln!();
    }
    Ok(())
}

struct Chat<'e> {
    engine: &'e Engine,
    session: Session<'e>,
    system: Option<Message>,
    /// User and assistant turns since the start or the last /reset.
    history: Vec<Message>,
    params: TextParams,
}

impl Chat<'_> {
    fn reset(&mut self) {
        self.history.clear();
        self.session.reset();
    }

    /// One exchange: the user's message, the streamed reply, the reply kept in the history.
    /// A conversation grown past the context, or one the template refuses, drops the message
    /// with a note and goes on; a failure of the model ends the chat.
    fn turn(&mut self, text: &str) -> anyhow::Result<()> {
        self.history.push(Message::user(text));
        let messages: Vec<Message> = self.system.iter().chain(&self.history).cloned().collect();
        let prompt = match self.engine.encode_chat(&messages) {
            Ok(p) => p,
            Err(e) => return self.drop_turn(format!("{e}")),
        };
        let stream = |piece: &str| {
            let mut out = std::io::stdout().lock();
            // A closed pipe (e.g. `| head`) ends the output, not the conversation's state.
            let _ = out.write_all(piece.as_bytes()).and_then(|()| out.flush());
        };
        let done = match self.session.generate(&prompt, &self.params, stream) {
            Ok(done) => done,
            Err(EngineError::ContextFull { tokens, context }) => {
                return self.drop_turn(format!(
                    "the conversation would take {tokens} tokens, more than the model's \
                     context of {context}; /reset to start a new one"
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let _ = writeln!(std::io::stdout().lock());
        report(&done, self.session.context_len());
        self.history.push(Message::assistant(done.text));
        Ok(())
    }

    fn drop_turn(&mut self, why: String) -> anyhow::Result<()> {
        self.history.pop();
        eprintln!("(message not sent: {why})");
        Ok(())
    }
}

/// The reply's token counts and speeds, on standard error.
fn report(done: &Completion, context: usize) {
    let prompt = done.prompt_token_ids.len();
    eprintln!(
        "[prompt {prompt} tokens, {} cached; prefill {:.1} tokens/s; reply {} tokens at {:.1} \
         tokens/s]",
        done.cached_prompt_tokens,
        done.prefill_tokens_per_s,
        done.token_ids.len(),
        done.decode_tokens_per_s,
    );
    if done.finish_reason == FinishReason::Length && prompt + done.token_ids.len() >= context {
        eprintln!("(the reply stopped at the end of the model's context; /reset to start over)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_commands_or_messages() {
        assert_eq!(parse_line("  \r"), Line::Blank);
        assert_eq!(parse_line("/exit\r"), Line::Exit);
        assert_eq!(parse_line(" /reset "), Line::Reset);
        assert_eq!(parse_line("/rset"), Line::Help);
        assert_eq!(
            parse_line("/usr/bin is where?"),
            Line::Message("/usr/bin is where?")
        );
        assert_eq!(parse_line(" Hello "), Line::Message("Hello"));
    }
}
