import type { Command } from 'commander';
import { OpenChatTokenizer, type ChatMessage } from '../../src/tokenizer/index.ts';
import { conditionOption } from './options.ts';

interface TokenizeOptions {
  chat?: boolean;
  condition?: string;
  system?: string;
  model?: string;
  tokens?: boolean;
  bos?: boolean;
  special?: boolean;
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('print the token ids of TEXT as a JSON array')
    .argument('<text>', 'the text to tokenize')
    .option('--chat', "encode TEXT as one user message in OpenChat's chat format, ready for the reply")
    .option('--condition <name>', "chat condition: 'GPT4 Correct' (default) or 'code' (implies --chat)", conditionOption)
    .option('--system <text>', 'a system message before the user message (implies --chat)')
    .option('--model <dir>', "use this Hugging Face model folder's tokenizer.json / tokenizer_config.json")
    .option('--tokens', 'also print the token strings, as a second JSON array')
    .option('--bos', 'plain text: prepend the BOS token <s>')
    .option('--special', 'plain text: recognize special tokens such as <|end_of_turn|> in TEXT')
    .action(async (text: string, opts: TokenizeOptions) => {
      const tokenizer = await OpenChatTokenizer.load(opts.model);
      const chat = opts.chat || opts.condition !== undefined || opts.system !== undefined;
      let ids: number[];
      if (chat) {
        const messages: ChatMessage[] = [];
        if (opts.system !== undefined) messages.push({ role: 'system', content: opts.system });
        messages.push({ role: 'user', content: text });
        ids = tokenizer.encodeChat(messages, { condition: opts.condition });
      } else {
        ids = tokenizer.encode(text, { addBos: opts.bos, parseSpecial: opts.special });
      }
      process.stdout.write(JSON.stringify(ids) + '\n');
      if (opts.tokens) process.stdout.write(JSON.stringify(ids.map((id) => tokenizer.idToToken(id) ?? null)) + '\n');
    });
}
