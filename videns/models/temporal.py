"""Seed 003's BiLSTM + self-attention + attention-pooling classifier, padding-safe."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from videns.models.base import SequenceClassifier, padding_mask, require


class TemporalAttentionClassifier(SequenceClassifier):
    """Input projection, stacked BiLSTM, self-attention with residual, attention pooling, MLP head.

    Unlike the original, padding changes nothing: attention gets a key-padding
    mask and pooling a masked softmax, so a sequence's logits do not depend on
    the other items in its batch.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 768,
        num_lstm_layers: int = 4,
        num_attention_heads: int = 12,
        dropout: float = 0.4,
        bidirectional: bool = True,
        head_dims: tuple[int, ...] = (768, 512, 256),
    ):
        """Build the model.

        Args:
            feature_dim: per-frame feature size D, read from the data files.
            num_classes: number of classes, read from the data files.
            hidden_dim: projection width and LSTM hidden size per direction.
            num_lstm_layers: stacked LSTM layers.
            num_attention_heads: self-attention heads; must divide the LSTM output width.
            dropout: dropout between LSTM layers, in attention and in the head (half of it at the input and pooling).
            bidirectional: run the LSTM in both directions.
            head_dims: widths of the classifier MLP's hidden layers (seed: 768, 512, 256).
        """
        super().__init__()
        width = hidden_dim * (2 if bidirectional else 1)
        require(hidden_dim >= 1, f"model.hidden_dim must be >= 1, got {hidden_dim}")
        require(num_lstm_layers >= 1, f"model.num_lstm_layers must be >= 1, got {num_lstm_layers}")
        require(num_attention_heads >= 1 and width % num_attention_heads == 0,
                f"model.num_attention_heads={num_attention_heads} must divide the attention width "
                f"{width} (hidden_dim x {2 if bidirectional else 1} directions)")
        require(0.0 <= dropout < 1.0, f"model.dropout must be in [0, 1), got {dropout}")
        require(len(head_dims) >= 1 and min(head_dims) >= 1, f"model.head_dims must be positive widths, got {head_dims}")
        self.input_projection = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Dropout(dropout * 0.5)
        )
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, num_layers=num_lstm_layers, batch_first=True,
                            dropout=dropout if num_lstm_layers > 1 else 0.0, bidirectional=bidirectional)
        self.attention = nn.MultiheadAttention(width, num_attention_heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(width)
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_pooling = nn.Sequential(
            nn.Linear(width, width // 2), nn.LayerNorm(width // 2), nn.Tanh(), nn.Dropout(dropout * 0.5),
            nn.Linear(width // 2, 1),
        )
        self.classifier = _mlp_head(width, head_dims, num_classes, dropout)
        self._initialize_weights()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, max_len, _ = x.shape
        mask = padding_mask(lengths, max_len, x.device)  # (B, T)
        h = self.input_projection(x)  # (B, T, H)
        lstm_out = self._run_lstm(h, lengths)  # (B, T, W), W = H * directions
        attended, _ = self.attention(lstm_out, lstm_out, lstm_out, key_padding_mask=~mask, need_weights=False)
        attended = self.attention_norm(lstm_out + self.attention_dropout(attended))  # (B, T, W)
        scores = self.attention_pooling(attended).squeeze(-1)  # (B, T)
        weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)  # (B, T), zero on padding
        pooled = torch.bmm(weights.unsqueeze(1), attended).squeeze(1)  # (B, W)
        return self.classifier(pooled)  # (B, C)

    def _run_lstm(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        max_len = h.shape[1]
        if bool((lengths == max_len).all()):
            # Equal lengths: packing would only add overhead (about 13% on CPU).
            return self.lstm(h)[0]
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=max_len)[0]  # (B, T, W)

    def _initialize_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _mlp_head(width: int, hidden: tuple[int, ...], num_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out in enumerate(hidden):
        last_hidden = i == len(hidden) - 1
        layers += [nn.Linear(width, out), nn.LayerNorm(out), nn.ReLU(),
                   nn.Dropout(dropout * 0.5 if last_hidden else dropout)]
        width = out
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
